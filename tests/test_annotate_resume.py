"""A `sicog annotate-cod` process killed at several points resumes without losing or duplicating records,
without asking the teacher again for what was done, and ends with the files of an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from fault_inject import report_kills
from annotate_helpers import API_KEY, FakeTeacher, cli_args, jsonl, make_dataset

REPO = Path(__file__).resolve().parents[1]
FAULT = Path(__file__).with_name("fault_inject.py")
FAULTS = {"item-7": ["500", "429"]}


def _argv(root: Path, url: str) -> list[str]:
    argv = cli_args(root, url)
    argv[argv.index("--concurrency") + 1] = "2"
    return ["annotate-cod", *argv]


def _env(**extra: str) -> dict:
    return {**os.environ, "OPENAI_API_KEY": API_KEY, "PYTHONPATH": str(REPO), **extra}


def start(root: Path, url: str, *fault: str, kill_file: str = "") -> subprocess.Popen:
    head = [str(FAULT), *fault] if fault else ["-m", "sicog"]
    return subprocess.Popen([sys.executable, *head, *_argv(root, url)], env=_env(SICOG_TEST_KILL_FILE=kill_file),
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkill_at_several_points_then_rerun_loses_and_duplicates_nothing(tmp_path):
    """Kill 1: from outside, once 6 records are done (then a torn line appended by hand). Kill 2: half-way
    through writing the 6th record of the rerun (append-torn). Kill 3: every record done, cod.jsonl published,
    dd.jsonl not yet (publish-final). A last rerun; the files equal those of an uninterrupted run."""
    n = 40
    make_dataset(tmp_path, n)
    ref, root = tmp_path / "ref", tmp_path / "killed"
    for folder in (ref, root):
        folder.mkdir()
        (folder / "records.jsonl").write_text((tmp_path / "records.jsonl").read_text())
        (folder / "images").symlink_to(tmp_path / "images")
    with FakeTeacher({k: list(v) for k, v in FAULTS.items()}, delay_s=0.08) as teacher:
        whole = start(ref, teacher.url)
        out, _ = whole.communicate(timeout=120)
        assert whole.returncode == 0, out.decode()

    progress = root / "cod" / "annotate_progress.jsonl"
    with FakeTeacher({k: list(v) for k, v in FAULTS.items()}, delay_s=0.08) as teacher:
        proc = start(root, teacher.url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if progress.exists() and progress.read_text().count("\n") >= 6:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        done = [{r["id"] for r in jsonl(progress)}]
        assert 6 <= len(done[0]) < n - 10
        assert not (root / "cod" / "cod.jsonl").exists()  # merged files only at the end
        with progress.open("a") as f:  # a line torn by the kill, whatever the timing was
            f.write('{"id": "item-39", "cod": {"id": "item-39", "conv')
        asked = [Counter(r["id"] for r in teacher.requests)]

        second = start(root, teacher.url, "append-torn", "5", kill_file=progress.name)
        second.communicate(timeout=120)
        assert second.returncode == -signal.SIGKILL
        text = progress.read_text()
        assert text.count("\n") == len(done[0]) + 5 and not text.endswith("\n")  # 5 more, then half a line
        done.append({json.loads(x)["id"] for x in text.splitlines()[:-1]})
        asked.append(Counter(r["id"] for r in teacher.requests))

        third = start(root, teacher.url, "publish-final", "0", kill_file="dd.jsonl")
        third.communicate(timeout=120)
        assert third.returncode == -signal.SIGKILL
        assert (root / "cod" / "cod.jsonl").exists() and not (root / "dd" / "dd.jsonl").exists()
        done.append({r["id"] for r in jsonl(progress)})
        assert len(done[-1]) == n
        asked.append(Counter(r["id"] for r in teacher.requests))

        rerun = start(root, teacher.url)
        out, _ = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, out.decode()
        asked.append(Counter(r["id"] for r in teacher.requests))

    cods = jsonl(root / "cod" / "cod.jsonl")
    progress_ids = [r["id"] for r in jsonl(progress)]
    names = ("cod/cod.jsonl", "dd/dd.jsonl", "cod/annotate_failures.jsonl")
    report_kills("annotate-cod", kills=3, resumed=3, lost=n - len({r["id"] for r in cods}),
                 duplicated=len(progress_ids) - len(set(progress_ids)),
                 identical=all((root / x).read_text() == (ref / x).read_text() for x in names))
    for name in names:
        assert (root / name).read_text() == (ref / name).read_text(), name
    assert [r["id"] for r in cods] == [f"item-{i}" for i in range(n)]
    assert len(progress_ids) == len(set(progress_ids)) == n
    # Ids done before a kill are never asked again; only those in flight at a kill are (at most 2 x 2).
    for before, (then, now) in zip(done, zip(asked, asked[1:])):
        asked_again = {i for i in now if now[i] > then.get(i, 0)}
        assert not asked_again & before
    assert asked[-1] == asked[-2], "the last rerun found every record done"
    summary = json.loads((root / "cod" / "annotate_summary.json").read_text())
    assert summary["annotated"] == n and summary["pending"] == 0 and summary["failed"] == 0
    assert summary["this_run"]["annotated"] == 0
