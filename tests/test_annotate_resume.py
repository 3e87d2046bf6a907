"""A `sicog annotate-cod` process killed mid-run resumes without losing or duplicating records."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from test_annotate_cod import API_KEY, FakeTeacher, cli_args, jsonl, make_dataset

REPO = Path(__file__).resolve().parents[1]


def start(root: Path, url: str) -> subprocess.Popen:
    env = {**os.environ, "OPENAI_API_KEY": API_KEY, "PYTHONPATH": str(REPO)}
    argv = cli_args(root, url)
    argv[argv.index("--concurrency") + 1] = "2"
    return subprocess.Popen([sys.executable, "-m", "sicog", "annotate-cod", *argv], env=env, cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkill_mid_run_then_rerun_loses_and_duplicates_nothing(tmp_path):
    n = 40
    make_dataset(tmp_path, n)
    progress = tmp_path / "cod" / "annotate_progress.jsonl"
    with FakeTeacher({"item-7": ["500", "429"]}, delay_s=0.08) as teacher:
        proc = start(tmp_path, teacher.url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if progress.exists() and progress.read_text().count("\n") >= 6:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        killed_at = jsonl(progress)
        assert 6 <= len(killed_at) < n
        assert not (tmp_path / "cod" / "cod.jsonl").exists()  # merged files only at the end
        first_requests = Counter(r["id"] for r in teacher.requests)
        with progress.open("a") as f:  # a line torn by the kill, whatever the timing was
            f.write('{"id": "item-39", "cod": {"id": "item-39", "conv')

        rerun = start(tmp_path, teacher.url)
        out, _ = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, out.decode()
        all_requests = Counter(r["id"] for r in teacher.requests)

    cods = jsonl(tmp_path / "cod" / "cod.jsonl")
    assert [r["id"] for r in cods] == [f"item-{i}" for i in range(n)]
    assert len(jsonl(tmp_path / "dd" / "dd.jsonl")) == n
    assert jsonl(tmp_path / "cod" / "annotate_failures.jsonl") == []
    progress_ids = [r["id"] for r in jsonl(progress)]
    assert len(progress_ids) == len(set(progress_ids)) == n
    # Ids finished before the kill were not asked again; only those in flight at the kill were.
    done_before = {r["id"] for r in killed_at}
    asked_again = {i for i in first_requests if all_requests[i] > first_requests[i]}
    assert not asked_again & done_before
    assert len(asked_again) <= 3
    summary = json.loads((tmp_path / "cod" / "annotate_summary.json").read_text())
    assert summary["annotated"] == n and summary["pending"] == 0 and summary["failed"] == 0
    assert summary["this_run"]["annotated"] == n - len(killed_at)
