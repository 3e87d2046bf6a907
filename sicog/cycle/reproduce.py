"""`sicog reproduce`: the whole SICOG cycle on the mini world, ending in the results table.

    sicog reproduce --out runs/reproduce --size mini          # `make reproduce`
    sicog reproduce --out /tmp/r --size micro                  # a few minutes; run by the tests

Every step writes into `OUT/<step>/` and is skipped when rerun after it finished, so a killed run
resumes. The steps, per training seed (SPEC section 1):

 1. world, unimodal pre-training of the tiny CLIP and Qwen2, the fresh model (`sicog build-model`);
    stage 1 alignment on `align`, stage 2 on `sft`: the baseline;
 2. CoD seed annotated through the world's teacher with the real client (`sicog annotate-cod`),
    CoT seed converted (`sicog convert-cot`);
 3. stage 0 from the baseline: a perception model and a reasoning model;
 4. N candidates for the image pool and the question pool (`sicog generate`, `merge-candidates`),
    curated by self-consistency (`sicog curate`);
 5. stage 1.5 from the stage-1 model on the curated data, then stage 2: the SICOG model;
 6. every model evaluated (`sicog evaluate`), the headline pair also with shuffled images (the blind
    control: does the model read the image?) and through `sicog probe` (what tower and connector
    carry, and the teacher-forced answers with own and shuffled images);
 7. the SICOG row's reasoning candidates curated by the vote method too (for the diagnostics);
 8. the report: table, perception gates, curation diagnostics, costs and plots. It reads the steps'
    outputs and runs none.

Sizes live in configs/experiments/reproduce.yaml (read as `sicog.cycle.plans.Plan`); the variants
(table rows) in sicog/cycle/variants.py; the steps in sicog/cycle/cycle.py, each returning typed paths
(sicog/cycle/outputs.py); the report, which reads only finished outputs, in sicog/cycle/report.py.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from sicog.cycle.cycle import Cycle
from sicog.cycle.outputs import CycleResult, DiagnosticInputs, RowModels
from sicog.cycle.plans import Plan, load_plan
from sicog.cycle.steps import MissingOutput, StepFailed
from sicog.cycle.variants import get_variants
from sicog.data.checks import InputError, check_output_dir
from sicog.data.output_lock import OutputLock

log = logging.getLogger(__name__)
HEADLINE = ("baseline", "sicog")   # the rows run over every seed, with the blind control and the probes


def run_cycle(out: Path, plan: Plan, rows: list[str] | None = None, seeds: list[int] | None = None) -> CycleResult:
    """Run (or resume) the cycle; returns every output the report reads."""
    cycle = Cycle(out, plan)
    result = CycleResult(out, plan, get_variants(rows or plan.rows), seeds if seeds is not None else plan.seeds)
    started = time.time()
    result.world = cycle.build_world().path
    base = cycle.base_model()
    seed_data = cycle.annotations()
    first_seed = result.seeds[0]
    for v in result.variants:
        for seed in (result.seeds if v.name in HEADLINE else result.seeds[:1]):
            first = len(cycle.run.requested)
            result.models[(v.name, seed)] = models = cycle.variant_model(v, seed, base, seed_data, result.models)
            result.steps[(v.name, seed)] = cycle.run.requested[first:]   # what this row used, run now or before
            result.evals[(v.name, seed)] = cycle.evaluate(f"eval/{v.name}-s{seed}", models.final)
            if v.name in HEADLINE and seed == first_seed:
                result.blind[v.name] = cycle.evaluate(f"eval/{v.name}-s{seed}-shuffled", models.final, blind=True)
                result.probes[v.name] = cycle.probe(f"probe/{v.name}-s{seed}", models.final)
    if ("sicog", first_seed) in result.models:
        result.diagnostics = diagnostic_inputs(cycle, result.models[("sicog", first_seed)])
    result.trained = dict(cycle.trained)
    log.info("cycle finished in %.1fs", time.time() - started)
    return result


def diagnostic_inputs(cycle: Cycle, sicog: RowModels) -> dict[str, DiagnosticInputs]:
    """The SICOG row's candidates and curations (first seed), and the vote-method curation of its
    reasoning candidates: the last step of the cycle."""
    kinds = {"perception": "captions", "reasoning": "reasoning"}
    out = {kinds[g.kind]: DiagnosticInputs(g.candidates, g.curation) for g in sicog.data}
    reasoning = [g for g in sicog.data if g.kind == "reasoning"]
    if reasoning:
        out["reasoning"] = DiagnosticInputs(reasoning[0].candidates, reasoning[0].curation,
                                            cycle.vote_curation(reasoning[0]))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="run folder; every step writes OUT/<step>/ and is resumable")
    parser.add_argument("--size", default="mini",
                        help="a plan of configs/experiments/reproduce.yaml: micro, mini (30-minute budget), mini-full")
    parser.add_argument("--rows", default=None, help="comma list of table rows (default: the plan's rows)")
    parser.add_argument("--seeds", default=None, help="comma list of training seeds (default: the plan's)")


def _rows(text: str | None, plan: Plan) -> list[str] | None:
    if not text:
        return None
    rows = [r.strip() for r in text.split(",") if r.strip()]
    try:
        variants = get_variants(rows)
    except ValueError as e:
        raise InputError(f"--rows: {e}") from None
    if not rows:
        raise InputError(f"--rows {text!r} names no row")
    uncurated = [v.name for v in variants if v.tau is not None and v.tau not in plan.thresholds]
    if uncurated:
        raise InputError(f"--rows: {', '.join(uncurated)}: plan {plan.size!r} curates only at thresholds "
                         f"{plan.thresholds}")
    return rows


def _seeds(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"--seeds {text!r}: give a comma list of integers, e.g. 0,1,2") from None
    if not seeds:
        raise InputError(f"--seeds {text!r} names no seed")
    return seeds


def run(args: argparse.Namespace) -> int:
    from sicog.cycle.report import write_report

    try:
        plan = load_plan(args.size)  # checked before anything is written
    except ValueError as e:
        raise InputError(f"--size: {e}") from None
    rows, seeds = _rows(args.rows, plan), _seeds(args.seeds)
    out = check_output_dir(args.out, "--out")
    with OutputLock(out, "--out"):  # the steps lock their own outputs too
        try:
            result = run_cycle(out, plan, rows, seeds)
        except (StepFailed, MissingOutput, ValueError) as e:
            log.error("%s", e)
            return 1
        try:
            table = write_report(result)
        except MissingOutput as e:
            log.error("%s", e)
            return 1
    print(table)
    return 0
