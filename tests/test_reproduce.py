"""`sicog reproduce`: the whole cycle on the micro plan, its resume, and the report's arithmetic."""
import json
import math
import subprocess
import sys

import pytest

from sicog.evaluate.diagnostics import auroc, score_diagnostics
from sicog.evaluate.report import markdown_table, reproduce_command, verdict
from sicog.evaluate.steps import StepFailed, StepRunner
from sicog.evaluate.variants import get_variants


def test_auroc_matches_pairwise_count():
    scores = [0.9, 0.8, 0.8, 0.3, 0.1]
    labels = [True, False, True, False, True]
    # correct: 0.9, 0.8, 0.1; incorrect: 0.8, 0.3 -> pairs won: (0.9>0.8, 0.9>0.3, 0.8=0.8 half, 0.8>0.3, 0.1<both)
    assert auroc(scores, labels) == pytest.approx((1 + 1 + 0.5 + 1 + 0 + 0) / 6)
    assert math.isnan(auroc([0.1, 0.2], [True, True]))


def test_score_diagnostics_by_hand(tmp_path):
    rows = [{"id": "a", "scores": [0.9, 0.5], "argmax": 0, "max_score": 0.9},
            {"id": "b", "scores": [0.4, 0.7], "argmax": 1, "max_score": 0.7}]
    (tmp_path / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    correct = {"a": [True, False], "b": [True, False]}
    d = score_diagnostics(tmp_path / "scores.jsonl", correct, thresholds=[0.5, 0.8], tau=0.8)
    assert d["argmax_precision"] == 0.5          # a's argmax right, b's wrong
    assert d["candidate_accuracy"] == 0.5
    assert d["kept_fraction"] == 0.5 and d["kept_precision"] == 1.0   # only a passes 0.8
    assert [t["kept_fraction"] for t in d["by_threshold"]] == [1.0, 0.5]


def test_verdict_and_table_say_what_happened():
    rows = [{"variant": "baseline", "label": "Baseline", "seeds": 3, "QA overall": 0.40, "QA overall std": 0.01},
            {"variant": "sicog", "label": "SICOG", "seeds": 3, "QA overall": 0.38, "QA overall std": 0.01}]
    assert verdict(rows).startswith("SICOG is worse than the baseline")
    rows[1]["QA overall"] = 0.45
    assert verdict(rows).startswith("SICOG beats the baseline")
    rows[1]["QA overall"] = 0.405
    assert verdict(rows).startswith("SICOG does not separate from the baseline")
    table = markdown_table(["QA overall"], rows)
    assert "| SICOG | 3 | 40.5 ± 1.0 |" in table
    one_seed = [dict(r, seeds=1, **{"QA overall std": 0.0}) for r in rows]
    one_seed[1]["QA overall"] = 0.45
    assert "cannot say that either is better" in verdict(one_seed)


def test_report_names_the_command_that_reruns_it(tmp_path):
    class Cycle:
        out, size, plan = tmp_path / "run", "mini", {"rows": ["baseline", "sicog"], "seeds": [0]}
    plain = {"cycle": Cycle, "variants": get_variants(["baseline", "sicog"]), "seeds": [0]}
    assert reproduce_command(plain) == f"sicog reproduce --out {tmp_path / 'run'} --size mini"
    wider = {"cycle": Cycle, "variants": get_variants(["sicog", "dd"]), "seeds": [0, 1, 2]}
    assert reproduce_command(wider).endswith("--size mini --rows baseline,sicog,dd --seeds 0,1,2")


def test_unknown_rows_and_failed_steps_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown rows"):
        get_variants(["sicog", "nope"])
    runner = StepRunner(tmp_path)
    with pytest.raises(StepFailed, match="exit code 2"):
        runner.sicog("bad", ["train", "--stage", "no-such-stage"])
    assert not runner.done("bad")


@pytest.mark.slow
def test_micro_cycle_runs_and_resumes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "sicog", "reproduce", "--out", str(out), "--size", "micro"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for name in ("results.md", "results.csv", "results.xlsx", "diagnostics.json",
                 "plots/variants.png", "plots/threshold_curve.png", "plots/score_histogram.png",
                 "plots/training_curves.png"):
        assert (out / name).stat().st_size > 0, name
    md = (out / "results.md").read_text()
    for label in ("Baseline", "SICOG (CoD + CoT, curated)", "Without curation"):
        assert label in md
    assert "## Curation diagnostics" in md and "## Cost" in md
    # Every model of the plan was evaluated on all three benchmarks.
    for row in ("baseline", "sicog", "no_curation"):
        scores = json.loads((out / "eval" / f"{row}-s0" / "scores.json").read_text())
        assert set(scores["benchmarks"]) == {"qa", "pope", "captions"}
    # The headline pair also ran the blind control: QA and POPE with shuffled images.
    for row in ("baseline", "sicog"):
        blind = json.loads((out / "eval" / f"{row}-s0-shuffled" / "scores.json").read_text())
        assert blind["images"] == "shuffled" and set(blind["benchmarks"]) == {"qa", "pope"}
    assert "## Blind control" in md and "| baseline |" in md
    # ... and `sicog probe`: the perception gates of both, in the report.
    for row in ("baseline", "sicog"):
        probe = json.loads((out / "probe" / f"{row}-s0" / "probe.json").read_text())
        assert {"tower", "connector"} <= set(probe["probes"]) and probe["answers"]["split"] == "eval"
        assert probe["gates"]
    assert "## Perception gates" in md and "| object_shape |" in md and "answer accuracy, own - shuffled" in md
    # Stage 1.5 trained on what curation kept: the curated files feed the mixture.
    mixture = (out / "mixtures" / "stage1_5-sicog-s0.yaml").read_text()
    assert "curated_tau0.jsonl" in mixture
    # A rerun finds every step done, runs none again and reports the same table.
    table = (out / "results.csv").read_text()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "running:" not in second.stderr and "already done" in second.stderr
    assert (out / "results.csv").read_text() == table
