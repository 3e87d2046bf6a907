"""`sicog curate` killed with SIGKILL mid-run resumes: nothing scored twice, same outputs as an
uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fault_inject import report_kills
from sicog.data.formats import CAPTION_PROMPTS, COD_HEADINGS, format_steps

WORDS = ["red cube", "blue ball", "green cone", "yellow ring", "purple star", "grey disc"]


def write_candidates(path, n_inputs=12):
    with open(path, "w", encoding="utf-8") as f:
        for k in range(n_inputs):
            a, b = WORDS[k % 6], WORDS[(k + 1) % 6]
            descriptions = [f"A {a} is left of a {b}.", f"To the left of a {b} there is a {a}.",
                            f"A {b} and a {a}; the {a} is on the left." if k % 2 else "Boil pasta for nine minutes."]
            cands = [format_steps(COD_HEADINGS, ["Objects.", "Details.", "Layout.", "Margins.", d]) for d in descriptions]
            f.write(json.dumps({"id": f"i{k}", "image": f"{k}.png", "prompt": "<image>\n" + CAPTION_PROMPTS["cod-default"],
                                "candidates": cands, "generation": {"task": "caption", "prompt_name": "cod-default",
                                                                    "model": "m", "augment": None}}) + "\n")


def command(cands, out):
    return [sys.executable, "-m", "sicog", "curate", "--candidates", str(cands), "--out", str(out),
            "--thresholds", "0.7", "--chunk-size", "1", "--batch-size", "4"]


ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")


def partial_lines(out):
    files = list((out / ".partial").glob("*.jsonl")) if (out / ".partial").is_dir() else []
    return sum(len(p.read_text().splitlines()) for p in files)


FAULT = Path(__file__).with_name("fault_inject.py")


def complete_partial_lines(out) -> int:
    n = 0
    for path in (out / ".partial").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                json.loads(line)
                n += 1
            except json.JSONDecodeError:
                pass
    return n


def fault(point: str, step: int, pattern: str, cands, out) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FAULT), point, str(step), *command(cands, out)[3:]],
                          env={**ENV, "SICOG_TEST_KILL_FILE": pattern}, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted(tmp_path):
    """Kill 1: from outside, once 3 inputs are scored. Kill 2: half-way through writing the 4th score of the
    rerun (append-torn). Kill 3: every input scored, the first final file published and the second not
    (publish-final). A last rerun ends with the outputs of an uninterrupted run."""
    cands = tmp_path / "cands.jsonl"
    write_candidates(cands)
    whole = tmp_path / "whole"
    subprocess.run(command(cands, whole), env=ENV, check=True, capture_output=True, timeout=240)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(cands, killed), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while partial_lines(killed) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = partial_lines(killed)
    assert 3 <= done_before < 8, "the run must be killed part-way"
    assert not (killed / "summary.json").exists()
    complete = complete_partial_lines(killed)

    second = fault("append-torn", 3, "scores-*.rank0.jsonl", cands, killed)
    assert second.returncode == -9, second.stderr[-3000:]
    # A line cut by the kill is scored again; every complete one is reused.
    reused = int(second.stderr.split(" inputs to score (")[1].split(" already")[0])
    assert reused == complete
    assert complete_partial_lines(killed) == complete + 3 and partial_lines(killed) == complete + 4

    third = fault("publish-final", 1, "*.jsonl", cands, killed)
    assert third.returncode == -9, third.stderr[-3000:]
    assert (killed / "curated_tau0.7.jsonl").exists() and not (killed / "preferences.jsonl").exists()
    assert not (killed / "summary.json").exists() and complete_partial_lines(killed) == 12

    resumed = subprocess.run(command(cands, killed), env=ENV, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "0 inputs to score (12 already scored)" in resumed.stderr
    ids = [json.loads(x)["id"] for x in open(killed / "scores.jsonl")]
    names = ("curated_tau0.7.jsonl", "preferences.jsonl", "rejects.jsonl")
    a = [json.loads(x) for x in open(whole / "scores.jsonl")]
    b = [json.loads(x) for x in open(killed / "scores.jsonl")]
    same_scores = [x["id"] for x in a] == [y["id"] for y in b] and all(
        x["argmax"] == y["argmax"] and x["scores"] == pytest.approx(y["scores"], abs=1e-5) for x, y in zip(a, b))
    report_kills("curate", kills=3, resumed=3, lost=len({f"i{k}" for k in range(12)} - set(ids)),
                 duplicated=len(ids) - len(set(ids)),
                 identical=same_scores and all((killed / n).read_text() == (whole / n).read_text() for n in names))
    for name in ("curated_tau0.7.jsonl", "preferences.jsonl", "rejects.jsonl"):
        assert (killed / name).read_text() == (whole / name).read_text(), name
    assert [r["id"] for r in a] == [r["id"] for r in b] == [f"i{k}" for k in range(12)]
    for x, y in zip(a, b):
        assert x["argmax"] == y["argmax"] and x["scores"] == pytest.approx(y["scores"], abs=1e-5)
    assert not (killed / ".partial").exists()
    assert not list(killed.glob(".*.tmp")), "the temporary of the killed publish is removed by the rerun"
