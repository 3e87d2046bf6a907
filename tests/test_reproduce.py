"""`sicog reproduce`: the whole cycle on the micro plan, its resume, and the report's arithmetic."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fault_inject import report_kills

from sicog.curate.candidates import full_text
from sicog.cycle.diagnostics import auroc, score_diagnostics
from sicog.cycle.outputs import CycleResult, Evaluation
from sicog.cycle.plans import EXPERIMENTS, load_plan, load_plans, plan_from_dict
from sicog.cycle.report import gain_lines, gains, markdown_table, reproduce_command, verdict, write_report
from sicog.cycle.reproduce import _rows, run_cycle
from sicog.cli import main as sicog_main
from sicog.cycle.steps import MissingOutput, StepFailed, StepRunner, step_process
from sicog.cycle.variants import get_variants
from sicog.data.checks import InputError


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
    mini = load_plan("mini")    # rows baseline, sicog; seed 0
    plain = CycleResult(tmp_path / "run", mini, get_variants(["baseline", "sicog"]), [0])
    assert reproduce_command(plain) == f"sicog reproduce --out {tmp_path / 'run'} --size mini"
    wider = CycleResult(tmp_path / "run", mini, get_variants(["sicog", "dd"]), [0, 1, 2])
    assert reproduce_command(wider).endswith("--size mini --rows baseline,sicog,dd --seeds 0,1,2")


def test_plans_are_typed_and_refuse_unknown_keys(tmp_path):
    plans = load_plans()
    assert {"micro", "mini", "mini-full"} <= set(plans)
    micro = plans["micro"]
    assert micro.threshold == 0.0 and micro.rows == ["baseline", "sicog", "no_curation"]
    assert micro.overrides("stage1") == {"max_steps": 2}
    # mini-full inherits mini (a YAML merge key) and overrides the rows and seeds
    assert plans["mini-full"].overrides("stage0") == {"num_train_epochs": 3} and plans["mini-full"].seeds == [0, 1, 2]
    raw = yaml.safe_load(EXPERIMENTS.read_text())["micro"]
    with pytest.raises(ValueError, match="plan 'x' in the plan: unknown key 'num_candiates'"):
        plan_from_dict("x", {**raw, "num_candiates": 4})
    with pytest.raises(ValueError, match="missing key 'thresholds'"):
        plan_from_dict("x", {k: v for k, v in raw.items() if k != "thresholds"})
    with pytest.raises(ValueError, match="threshold 0.7 is not among thresholds"):
        plan_from_dict("x", {**raw, "threshold": 0.7})
    with pytest.raises(ValueError, match="unknown rows"):
        plan_from_dict("x", {**raw, "rows": ["baseline", "nope"]})
    assert plans["mini"].stage2_first == "sft_listing.jsonl" and plans["mini"].overrides("stage2_first")
    for bad in ("/abs/sft.jsonl", "../sft.jsonl", "", 3):
        with pytest.raises(ValueError, match="stage2_first must name a file under the world's data/"):
            plan_from_dict("x", {**raw, "stage2_first": bad})
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        load_plan("huge")
    # A threshold row needs a threshold the plan curates at.
    assert _rows("sicog_tau0.5", micro) == ["sicog_tau0.5"]
    with pytest.raises(InputError, match="sicog_tau0.6: plan 'micro' curates only at thresholds"):
        _rows("sicog_tau0.6", micro)


def test_a_missing_output_names_its_step(tmp_path):
    (tmp_path / "eval").mkdir()
    with pytest.raises(MissingOutput, match=r"step eval/sicog-s0: its output .*scores.json is missing"):
        Evaluation("eval/sicog-s0", tmp_path / "eval").scores()


def test_unknown_rows_and_failed_steps_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown rows"):
        get_variants(["sicog", "nope"])
    runner = StepRunner(tmp_path)
    with pytest.raises(StepFailed, match="exit code 2"):
        runner.sicog("bad", ["train", "--stage", "no-such-stage"])
    assert not runner.done("bad")


@pytest.mark.parametrize("mode", ["fork", "spawn"])
def test_a_step_runs_as_python_m_sicog_would_in_either_process_mode(tmp_path, monkeypatch, mode):
    """A step forked from the pipeline and one in a fresh interpreter write the same outputs, log the
    command's own output, and fail the same way; the pipeline's own streams are untouched."""
    monkeypatch.setenv("SICOG_STEP_PROCESS", mode)
    streams = (sys.stdout, sys.stderr)
    runner = StepRunner(tmp_path / mode)
    folder = runner.sicog("world", ["world", "build", "--out", tmp_path / mode / "world", "--size", "micro"])
    assert runner.done("world") and folder == tmp_path / mode / "world"
    reference = tmp_path / "reference"
    assert sicog_main(["world", "build", "--out", str(reference), "--size", "micro"]) == 0
    assert (folder / "manifest.json").read_bytes() == (reference / "manifest.json").read_bytes()
    log_text = runner.log_file("world").read_text()
    assert "$ sicog world build" in log_text and "INFO sicog.world" in log_text
    with pytest.raises(StepFailed, match="exit code 2") as failed:
        runner.sicog("bad", ["train", "--stage", "no-such-stage"])
    assert "sicog train: error: unknown stage 'no-such-stage'" in str(failed.value) and not runner.done("bad")
    assert (sys.stdout, sys.stderr) == streams


def test_a_bad_step_process_mode_is_refused(monkeypatch):
    monkeypatch.setenv("SICOG_STEP_PROCESS", "thread")
    with pytest.raises(ValueError, match="SICOG_STEP_PROCESS='thread': use fork or spawn"):
        step_process()


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """One uninterrupted run of the micro plan: (run folder, command, its result). Tests that change the
    folder leave it complete again."""
    out = tmp_path_factory.mktemp("micro") / "run"
    cmd = [sys.executable, "-m", "sicog", "reproduce", "--out", str(out), "--size", "micro"]
    return out, cmd, subprocess.run(cmd, capture_output=True, text=True, timeout=1500)


@pytest.mark.slow
def test_micro_cycle_runs_and_resumes(micro):
    out, cmd, first = micro
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for name in ("results.md", "results.csv", "results.xlsx", "diagnostics.json", "gains.csv",
                 "plots/variants.png", "plots/threshold_curve.png", "plots/score_histogram.png",
                 "plots/training_curves.png"):
        assert (out / name).stat().st_size > 0, name
    # Every step took and released the locks of its outputs (world build's lies beside the world folder).
    assert not list(out.parent.rglob("*.lock")), list(out.parent.rglob("*.lock"))
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
    # Stage 2 of every row trains the world's listing conversations alone, then all of sft.jsonl from
    # the model that made.
    for row in ("baseline", "sicog", "no_curation"):
        first, full = (json.loads((out / "steps" / "stage2" / f"{row}-s0{tag}.done.json").read_text())["command"]
                       for tag in ("-first", ""))
        assert first[first.index("--data-path") + 1] == str(out / "world" / "data" / "sft_listing.jsonl")
        assert full[full.index("--data-path") + 1] == str(out / "world" / "data" / "sft.jsonl")
        assert full[full.index("--model-name-or-path") + 1] == str(out / "stage2" / f"{row}-s0-first" / "model")
    # A rerun finds every step done, runs none again and reports the same table.
    table = (out / "results.csv").read_text()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "running:" not in second.stderr and "already done" in second.stderr
    assert (out / "results.csv").read_text() == table


def _scores(out: Path, step: str) -> dict:
    return json.loads((out / step / "scores.json").read_text())


def _csv(path: Path) -> dict[str, dict]:
    import csv

    return {r["variant"]: r for r in csv.DictReader(path.open())}


@pytest.mark.slow
def test_micro_tables_equal_the_per_seed_results_by_hand(micro):
    """results.csv and gains.csv recomputed from each row's `sicog evaluate` scores.json (one seed)."""
    out, _, first = micro
    assert first.returncode == 0, first.stderr[-3000:]
    results, gains_csv = _csv(out / "results.csv"), _csv(out / "gains.csv")
    assert list(results) == ["baseline", "sicog", "no_curation"] and list(gains_csv) == ["sicog", "no_curation"]
    qa = {row: _scores(out, f"eval/{row}-s0")["benchmarks"]["qa"]["scores"]["accuracy"] for row in results}
    pope = {row: _scores(out, f"eval/{row}-s0")["benchmarks"]["pope"]["scores"]["f1"] for row in results}
    for row in results:
        assert float(results[row]["QA overall"]) == pytest.approx(qa[row], abs=1e-12)
        assert float(results[row]["POPE F1"]) == pytest.approx(pope[row], abs=1e-12)
    for row in gains_csv:
        assert float(gains_csv[row]["QA gain"]) == pytest.approx(qa[row] - qa["baseline"], abs=1e-12)
        assert float(gains_csv[row]["POPE F1 gain"]) == pytest.approx(pope[row] - pope["baseline"], abs=1e-12)
    # The no-curation row's cost: the pick, stage 1.5 and stage 2 it adds to the baseline (the warm-up
    # and generation it shares with SICOG count for it too: both start from the baseline).
    walls = {json.loads(m.read_text())["step"]: json.loads(m.read_text())["wall_s"]
             for m in (out / "steps").rglob("*.done.json")}
    own = ["pools", "stage0/perception-cod-s0", "stage0/reasoning-cot-s0", "generate/perception-cod-s0/run",
           "generate/perception-cod-s0/merge", "generate/reasoning-cot-s0/run", "generate/reasoning-cot-s0/merge",
           "pick/perception-cod-s0", "pick/reasoning-cot-s0", "stage1_5/no_curation-s0", "stage2/no_curation-s0-first",
           "stage2/no_curation-s0"]
    assert float(gains_csv["no_curation"]["extra wall s"]) == pytest.approx(sum(walls[s] for s in own))


@pytest.mark.slow
def test_micro_no_curation_row_trains_on_the_random_pick(micro):
    """The no-curation row's stage 1.5 reads the random method's records (one per input, the picked
    candidate written by the same record writer as the curated rows); SICOG's reads the embedding curation."""
    out, _, first = micro
    assert first.returncode == 0, first.stderr[-3000:]

    def mixture(row: str) -> list[Path]:
        return [Path(e["json_path"]) for e in yaml.safe_load((out / "mixtures" / f"stage1_5-{row}-s0.yaml").read_text())]

    picks = mixture("no_curation")
    assert [p.relative_to(out.resolve()).parts[:2] for p in picks] == [("pick", "perception-cod-s0"),
                                                                      ("pick", "reasoning-cot-s0")]
    assert [p.relative_to(out.resolve()).parts[0] for p in mixture("sicog")] == ["curate", "curate"]
    for path in picks:
        summary = json.loads((path.parent / "summary.json").read_text())
        assert summary["method"] == "random"
        (kind,) = summary["kinds"]     # cod or cot, read from the generation metadata
        candidates = {r["id"]: r for r in map(json.loads, Path(summary["candidates_file"]).read_text().splitlines())}
        chosen = {r["id"]: r["argmax"] for r in map(json.loads, (path.parent / "scores.jsonl").read_text().splitlines())}
        records = [json.loads(line) for line in path.read_text().splitlines()]
        # one record per input; an input refused (e.g. too few usable candidates) is in rejects.jsonl with
        # its reason, never lost
        rejects = [json.loads(line) for line in (path.parent / "rejects.jsonl").read_text().splitlines()]
        assert all(r["reason"] for r in rejects) and len(rejects) == summary["counts"]["rejected_or_skipped"]
        assert sorted([r["id"] for r in records] + [r["id"] for r in rejects]) == sorted(candidates)
        assert len(records) == summary["counts"]["scored"] > 0
        for r in records:
            text = full_text(candidates[r["id"]]["candidates"][chosen[r["id"]]], kind)
            assert r["conversations"][1]["value"] == text


def _files(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_micro_report_runs_no_step_and_names_a_missing_output(micro):
    """The report reads finished outputs only: written again on the finished run folder it adds no file
    (no step folder, marker or log), and with an output moved away it fails naming the step, running nothing."""
    out, _, first = micro
    assert first.returncode == 0, first.stderr[-3000:]
    result = run_cycle(out, load_plan("micro"))   # every step done: each is skipped
    before = _files(out)
    table = (out / "results.csv").read_text()
    write_report(result)
    assert _files(out) == before and (out / "results.csv").read_text() == table
    # Moved away: the vote curation's folder and its marker (as if it had never run), then an evaluation's scores.
    vote = [out / "curate" / "reasoning-cot-s0-vote", out / "steps" / "curate" / "reasoning-cot-s0-vote.done.json"]
    scores = out / "eval" / "sicog-s0" / "scores.json"
    aside = out.parent / "aside"
    moved = []

    def move_aside(path: Path) -> None:
        target = aside / str(len(moved))
        aside.mkdir(exist_ok=True)
        shutil.move(str(path), str(target))
        moved.append((target, path))

    try:
        for path in vote:
            move_aside(path)
        with pytest.raises(MissingOutput, match="step curate/reasoning-cot-s0-vote: its output"):
            write_report(result)
        assert not any(p.exists() for p in vote)     # the report did not run the vote curation
        while moved:
            target, path = moved.pop()
            shutil.move(str(target), str(path))
        move_aside(scores)
        with pytest.raises(MissingOutput, match="step eval/sicog-s0: its output"):
            write_report(result)
        assert not scores.exists()
    finally:
        for target, path in moved:
            shutil.move(str(target), str(path))
    write_report(result)
    assert _files(out) == before and (out / "results.csv").read_text() == table


def test_gains_over_the_baseline_by_hand(tmp_path):
    """Paired per-seed gains, the share of the oracle's gain and the cost of the steps a row adds."""
    qa = {("baseline", 0): 0.40, ("baseline", 1): 0.42, ("sicog", 0): 0.44, ("sicog", 1): 0.48,
          ("oracle", 0): 0.50, ("oracle", 1): 0.52, ("round2", 0): 0.45}
    evals = {}
    for (name, seed), acc in qa.items():
        folder = tmp_path / f"{name}-{seed}"
        folder.mkdir()
        (folder / "scores.json").write_text(json.dumps({"benchmarks": {
            "qa": {"scores": {"accuracy": acc, "per_skill": {}}}, "pope": {"scores": {"f1": acc / 2}}}}))
        evals[(name, seed)] = Evaluation(f"eval/{name}-s{seed}", folder)
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
    result = CycleResult(tmp_path, load_plan("micro"), get_variants(["baseline", "sicog", "oracle", "round2"]),
                         [0, 1], evals=evals, steps=steps)
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


FAULT = Path(__file__).with_name("fault_inject.py")
# The last steps of the micro plan, in the order they run: the no-curation row's evaluation, then the vote
# curation of the curation diagnostics (the cycle's last step).
TAIL = ("eval/no_curation-s0", "curate/reasoning-cot-s0-vote")
REPORT = ("results.csv", "results.md", "results.xlsx", "diagnostics.json")


def _markers(out: Path) -> list[str]:
    """Finished steps, oldest first."""
    found = sorted((out / "steps").rglob("*.done.json"), key=lambda p: p.stat().st_mtime_ns)
    return [str(p.relative_to(out / "steps"))[: -len(".done.json")] for p in found]


def _runs_of(out: Path, step: str) -> int:
    """How many times a step was started: its log gets one `$ sicog ...` line per start."""
    log = out / "steps" / f"{step}.log"
    return sum(line.startswith("$ sicog ") for line in log.read_text().splitlines()) if log.exists() else 0


def _wait_for(proc: subprocess.Popen, ready, what: str) -> None:
    deadline = time.monotonic() + 600
    while not ready():
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _group(pgid: int, within_s: float = 10) -> list[int]:
    """Live processes of process group `pgid` still there after `within_s` seconds (Linux /proc)."""
    deadline = time.monotonic() + within_s
    while True:
        live = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
                live.append(int(stat.parent.name))
        if not live or time.monotonic() > deadline:
            return live
        time.sleep(0.05)


def _eval_outputs(folder: Path) -> dict:
    files = {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*.jsonl"))}
    scores = json.loads((folder / "scores.json").read_text())
    scores.pop("new_tokens_per_second", None)  # a timing
    return {**files, "scores.json": scores, "summary.txt": (folder / "summary.txt").read_text()}


def _curate_outputs(folder: Path) -> dict:
    return {p.name: p.read_text() for p in sorted(folder.glob("*.jsonl"))}


@pytest.mark.slow
def test_micro_cycle_killed_at_several_points_resumes_to_the_same_results(micro):
    """The micro run, rewound to just before its last steps (their folders, markers and logs, and the
    report, moved aside: the state a run killed there leaves), is killed four times as it replays them:
      1. the whole job (process group), half-way through the evaluation (2 predictions on disk);
      2. the job, once the evaluation's .done.json appears;
      3. `sicog reproduce` alone, half-way through the vote curation (the last step): the step it
         started must die with it, not run on holding its output's lock;
      4. in the report, after results.md is published and before results.csv is (fault point publish-final).
    The last rerun runs no step; no step is lost, none finished is run again, and the steps' outputs and
    the results equal the uninterrupted run's."""
    out, cmd, first = micro
    assert first.returncode == 0, first.stderr[-3000:]
    order = _markers(out)
    assert tuple(order[-len(TAIL):]) == TAIL, order[-5:]
    saved = out.parent / "uninterrupted-tail"
    shutil.rmtree(saved, ignore_errors=True)
    for step in TAIL:
        shutil.move(str(out / step), str(saved / step))
        (out / "steps" / f"{step}.done.json").unlink()
        (out / "steps" / f"{step}.log").unlink()
    for name in REPORT:
        shutil.move(str(out / name), str(saved / name))
    runs_before = {step: _runs_of(out, step) for step in order}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    kills = []

    # 1. The job, mid-evaluation.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    preds = out / TAIL[0] / "predictions"
    _wait_for(proc, lambda: sum(p.read_text().count("\n") for p in preds.glob("*.jsonl")) >= 2, "2 predictions")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kills.append("mid-evaluation")
    assert not (out / "steps" / f"{TAIL[0]}.done.json").exists()

    # 2. The job, between steps: once the evaluation's .done.json appears.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    _wait_for(proc, lambda: (out / "steps" / f"{TAIL[0]}.done.json").exists(), "the evaluation's marker")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kills.append("after the evaluation's .done.json")

    # 3. The pipeline alone, while the vote curation runs (it holds its output's lock): the step must die with
    #    the pipeline (PR_SET_PDEATHSIG), not run on behind it holding the lock the rerun needs.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    _wait_for(proc, lambda: (out / TAIL[1] / ".sicog.lock").exists(), "the vote curation's lock")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kills.append("the pipeline alone, during the vote curation")
    left = _group(proc.pid, within_s=2)  # a step running on would still be at work: it takes several seconds
    try:
        assert not left, f"steps outlived the pipeline that started them: {left}"
    finally:
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    # Killed half-way: no outputs, and a stale lock the next run takes over.
    assert (out / TAIL[1] / ".sicog.lock").exists() and not (out / TAIL[1] / "summary.json").exists()

    # 4. In the report, before results.csv is published.
    killed = subprocess.run([sys.executable, str(FAULT), "publish-final", "0", *cmd[3:]], capture_output=True,
                            text=True, timeout=600, env={**env, "SICOG_TEST_KILL_FILE": "results.csv"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    kills.append("in the report, before results.csv")
    assert (out / "results.md").exists() and not (out / "results.csv").exists()

    last = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert last.returncode == 0, last.stderr[-3000:]

    # Measured, then asserted: steps lost, finished steps started again, outputs as the uninterrupted run's.
    lost = sorted(set(order) - set(_markers(out)))
    started = {step: _runs_of(out, step) for step in order}
    # Before its marker a step is started once per run that reached it: the evaluation by the runs of kills 1
    # and 2, the vote curation by those of kills 3 and 4, and by kill 2's run too when that run got past the
    # evaluation's marker before the kill landed (the next step starts within milliseconds of the marker).
    again = [step for step in order if step not in TAIL and started[step] != runs_before[step]]
    again += [TAIL[0]] * max(0, started[TAIL[0]] - 2) + [TAIL[1]] * max(0, started[TAIL[1]] - 3)
    identical = (_eval_outputs(out / TAIL[0]) == _eval_outputs(saved / TAIL[0])
                 and _curate_outputs(out / TAIL[1]) == _curate_outputs(saved / TAIL[1])
                 and all((out / n).read_text() == (saved / n).read_text() for n in ("results.csv", "diagnostics.json")))
    report_kills("reproduce (micro)", kills=len(kills), resumed=len(kills), lost=len(lost), duplicated=len(again),
                 identical=identical)
    assert not lost, f"steps lost: {lost}"
    assert not again, f"steps run again after they finished: {again}"
    assert "running:" not in last.stderr  # the last rerun found every step done
    assert started[TAIL[0]] == 2 and started[TAIL[1]] in (2, 3)
    assert _eval_outputs(out / TAIL[0]) == _eval_outputs(saved / TAIL[0])
    assert _curate_outputs(out / TAIL[1]) == _curate_outputs(saved / TAIL[1])
    for name in ("results.csv", "diagnostics.json"):
        assert (out / name).read_text() == (saved / name).read_text(), name
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_world_build_killed_part_way_is_built_again(micro, tmp_path):
    """The cycle's first step: `sicog world build` killed while it renders, then rerun, builds the world again
    (it does not refuse its own half-written folder as someone else's) with the files of the micro run's world."""
    out, _, first = micro
    assert first.returncode == 0, first.stderr[-3000:]
    world = tmp_path / "world"
    cmd = [sys.executable, "-m", "sicog", "world", "build", "--out", str(world), "--size", "micro", "--seed", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(proc, lambda: len(list((world / "images").rglob("*.png"))) >= 20, "20 rendered images")
    proc.kill()
    proc.wait()
    assert not (world / "manifest.json").exists()
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "killed part-way" in rerun.stderr
    want = json.loads((out / "world" / "manifest.json").read_text())["files"]
    got = json.loads((world / "manifest.json").read_text())["files"]
    report_kills("world build", kills=1, resumed=1, lost=len(set(want) - set(got)),
                 duplicated=0, identical=got == want)
    assert got == want  # every file, by its SHA-256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]  # no lock or marker left beside it
