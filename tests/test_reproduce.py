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


def test_gains_over_the_baseline_by_hand(tmp_path):
    """Paired per-seed gains, the share of the oracle's gain and the cost of the steps a row adds."""
    from sicog.evaluate.report import gain_lines, gains

    qa = {("baseline", 0): 0.40, ("baseline", 1): 0.42, ("sicog", 0): 0.44, ("sicog", 1): 0.48,
          ("oracle", 0): 0.50, ("oracle", 1): 0.52, ("round2", 0): 0.45}
    evals = {}
    for (name, seed), acc in qa.items():
        folder = tmp_path / f"{name}-{seed}"
        folder.mkdir()
        (folder / "scores.json").write_text(json.dumps({"benchmarks": {
            "qa": {"scores": {"accuracy": acc, "per_skill": {}}}, "pope": {"scores": {"f1": acc / 2}}}}))
        evals[(name, seed)] = folder
    steps = {("baseline", 0): ["world", "stage1/s0", "stage2/baseline-s0"],
             ("sicog", 0): ["world", "stage1/s0", "stage2/baseline-s0", "generate/x", "stage1_5/sicog-s0", "stage2/sicog-s0"],
             ("oracle", 0): ["world", "stage1/s0", "stage2/baseline-s0", "stage1_5/oracle-s0", "stage2/oracle-s0"],
             ("round2", 0): ["world", "stage1/s0", "stage2/baseline-s0", "generate/x", "stage1_5/sicog-s0",
                             "stage2/sicog-s0", "generate/r2", "stage2/round2-s0"]}
    cost = [{"step": "world", "wall_s": 1000.0}, {"step": "stage1/s0", "wall_s": 100.0},
            {"step": "stage2/baseline-s0", "wall_s": 60.0, "train_tokens": 500},
            {"step": "generate/x", "wall_s": 120.0}, {"step": "stage1_5/sicog-s0", "wall_s": 30.0, "train_tokens": 70},
            {"step": "stage2/sicog-s0", "wall_s": 90.0, "train_tokens": 400},
            {"step": "stage1_5/oracle-s0", "wall_s": 30.0}, {"step": "stage2/oracle-s0", "wall_s": 90.0},
            {"step": "generate/r2", "wall_s": 60.0}, {"step": "stage2/round2-s0", "wall_s": 60.0}]
    result = {"variants": get_variants(["baseline", "sicog", "oracle", "round2"]), "seeds": [0, 1],
              "evals": evals, "steps": steps}
    rows = {r["variant"]: r for r in gains(result, cost)}
    assert set(rows) == {"sicog", "oracle", "round2"}
    s = rows["sicog"]
    assert s["seeds"] == 2 and s["QA gain"] == pytest.approx(0.05) and s["QA gain std"] == pytest.approx(0.0141421, rel=1e-4)
    assert s["POPE F1 gain"] == pytest.approx(0.025)
    assert s["share of oracle gain"] == pytest.approx(0.5)            # 5 of the oracle's 10 points
    assert s["extra wall s"] == 240.0 and s["extra train tokens"] == 470   # generate + stage 1.5 + stage 2
    assert s["wall min per QA point"] == pytest.approx(4 / 5)
    assert "share of oracle gain" not in rows["oracle"]
    r2 = rows["round2"]    # one seed; its cost counts only what it added to the SICOG model
    assert r2["seeds"] == 1 and r2["QA gain"] == pytest.approx(0.05) and r2["extra wall s"] == 120.0
    md = "\n".join(gain_lines(list(rows.values()), oracle_present=True))
    assert "| SICOG (CoD + CoT, curated) | 2 | +5.0 ± 1.4 | +2.5 ± 0.7 | 50% | 4.0 | 470 | 0.8 |" in md


def test_threshold_rows_and_later_rounds():
    tau = get_variants(["sicog_tau0.9"])[1]
    assert tau.name == "sicog_tau0.9" and tau.tau == 0.9 and tau.previous == "baseline"
    assert get_variants(["round3"])[1].previous == "round2" and get_variants(["round2"])[1].previous == "sicog"
    for bad in ("sicog_tau1.5", "sicog_taux"):
        with pytest.raises(ValueError, match="unknown rows"):
            get_variants([bad])
