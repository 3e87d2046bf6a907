"""SIGKILL a running `sicog evaluate` half-way through writing a prediction, and its rerun again, rerun it:
nothing lost, nothing duplicated, the same predictions, rejects and scores as an uninterrupted run."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import sicog
from fault_inject import report_kills
from evaluate_helpers import eval_world
from generate_helpers import SUBPROCESS_ENV

FAULT = Path(__file__).with_name("fault_inject.py")
BENCHMARKS = ("qa", "pope")
KILL_AFTER = 5  # complete predictions on disk at the kill: all of qa's (4), one of pope's


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return eval_world(tmp_path_factory.mktemp("evalkill"))


def _args(setup, out: Path) -> list[str]:
    return ["evaluate", "--model", str(setup["ckpt"]), "--world", str(setup["world"]), "--out", str(out),
            "--limit", "8", "--benchmarks", ",".join(BENCHMARKS), "--eval-config", str(setup["cfg"]),
            "--device", "cpu"]


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _scores(out: Path) -> dict:
    scores = json.loads((out / "scores.json").read_text())
    scores.pop("new_tokens_per_second")  # a timing
    return scores


def test_sigkill_mid_prediction_then_rerun_matches_an_uninterrupted_run(setup):
    ref, out = setup["root"] / "ref", setup["root"] / "killed"
    rc, err = sicog(*_args(setup, ref))
    assert rc == 0, err
    total = sum(len(_lines(ref / "predictions" / f"{b}.jsonl")) for b in BENCHMARKS)
    assert KILL_AFTER + 2 < total

    killed = subprocess.run([sys.executable, str(FAULT), "evaluate-prediction", str(KILL_AFTER), *_args(setup, out)],
                            env={**SUBPROCESS_ENV, "TQDM_DISABLE": "1"}, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    on_disk = "".join((out / "predictions" / f"{b}.jsonl").read_text() for b in BENCHMARKS
                      if (out / "predictions" / f"{b}.jsonl").exists())
    assert on_disk.count("\n") == KILL_AFTER and not on_disk.endswith("\n")  # and half of the next line
    assert not (out / "scores.json").exists()

    # A second kill, in the rerun: one more prediction written whole, the next one half.
    killed = subprocess.run([sys.executable, str(FAULT), "evaluate-prediction", "1", *_args(setup, out)],
                            env={**SUBPROCESS_ENV, "TQDM_DISABLE": "1"}, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    on_disk = "".join((out / "predictions" / f"{b}.jsonl").read_text() for b in BENCHMARKS
                      if (out / "predictions" / f"{b}.jsonl").exists())
    assert on_disk.count("\n") == KILL_AFTER + 1 and not on_disk.endswith("\n")

    rc, err = sicog(*_args(setup, out))  # the rerun takes over the dead run's lock and resumes
    assert rc == 0, err
    lost = dup = 0
    same = _scores(out) == _scores(ref)
    for b in BENCHMARKS:
        got = [r["id"] for d in ("predictions", "rejects") for r in _lines(out / d / f"{b}.jsonl")]
        want = {r["id"] for d in ("predictions", "rejects") for r in _lines(ref / d / f"{b}.jsonl")}
        lost, dup = lost + len(want - set(got)), dup + len(got) - len(set(got))
        same = same and all(_lines(out / d / f"{b}.jsonl") == _lines(ref / d / f"{b}.jsonl")
                            for d in ("predictions", "rejects"))
    report_kills("evaluate", kills=2, resumed=2, lost=lost, duplicated=dup, identical=same)
    for b in BENCHMARKS:
        preds, rejects = _lines(out / "predictions" / f"{b}.jsonl"), _lines(out / "rejects" / f"{b}.jsonl")
        ids = [r["id"] for r in preds + rejects]
        ref_ids = [r["id"] for r in _lines(ref / "predictions" / f"{b}.jsonl") + _lines(ref / "rejects" / f"{b}.jsonl")]
        assert len(ids) == len(set(ids)), f"{b}: duplicated ids"
        assert set(ids) == set(ref_ids), f"{b}: lost ids {set(ref_ids) - set(ids)}"
        assert preds == _lines(ref / "predictions" / f"{b}.jsonl")
        assert rejects == _lines(ref / "rejects" / f"{b}.jsonl")
    assert _scores(out) == _scores(ref)
    assert (out / "summary.txt").read_text() == (ref / "summary.txt").read_text()
