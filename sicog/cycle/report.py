"""The reproduction report: results table (Markdown, CSV, XLSX), curation diagnostics, costs, plots.

It reads the finished outputs a `CycleResult` lists and runs no step: an output that is missing
raises `MissingOutput` naming the step that should have written it, and a row the run did not
include is reported as not run.
"""
from __future__ import annotations

import csv
import json
import logging
import statistics
from pathlib import Path

from sicog.cycle.diagnostics import curation_diagnostics
from sicog.cycle.outputs import CycleResult, Model
from sicog.cycle.plots import plot_diagnostics, plot_training_curves, plot_variants
from sicog.cycle.steps import walltimes
from sicog.cycle.variants import get_variants
from sicog.data.records import atomic_write_text, write_json

log = logging.getLogger(__name__)

_LISTS = ("by_threshold", "scores", "correct")
SKILLS = ("count", "colour", "shape", "position", "relation", "text", "multi-step")


def row_metrics(scores: dict) -> dict[str, float]:
    """The table's columns from one `sicog evaluate` scores.json."""
    b = scores["benchmarks"]
    out: dict[str, float] = {}
    if "qa" in b:
        qa = b["qa"]["scores"]
        for skill in SKILLS:
            if skill in qa["per_skill"]:
                out[f"QA {skill}"] = qa["per_skill"][skill]["accuracy"]
        out["QA overall"] = qa["accuracy"]
    if "pope" in b:
        out["POPE F1"] = b["pope"]["scores"]["f1"]
    if "captions" in b:
        out["Caption recall"] = b["captions"]["scores"]["recall"]
        out["Caption halluc."] = b["captions"]["scores"]["chair_i"]
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def results_rows(result: CycleResult) -> tuple[list[str], list[dict]]:
    """One row per variant: mean (and std over seeds) of every column."""
    rows, columns = [], []
    for v in result.variants:
        per_seed = [row_metrics(evaluation.scores())
                    for (name, _), evaluation in sorted(result.evals.items()) if name == v.name]
        if not per_seed:
            raise ValueError(f"row {v.name} has no evaluation in this run")
        cols = list(per_seed[0])
        columns = columns or cols
        row = {"variant": v.name, "label": v.label, "seeds": len(per_seed)}
        for c in cols:
            mean, std = _mean_std([m[c] for m in per_seed])
            row[c], row[f"{c} std"] = mean, std
        rows.append(row)
    return columns, rows


def pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.0f}%"


def markdown_table(columns: list[str], rows: list[dict]) -> str:
    head = "| Model | seeds | " + " | ".join(columns) + " |"
    sep = "|---|---:|" + "---:|" * len(columns)
    lines = [head, sep]
    for r in rows:
        cells = []
        for c in columns:
            cell = f"{100 * r[c]:.1f}"
            if r["seeds"] > 1:
                cell += f" ± {100 * r[f'{c} std']:.1f}"
            cells.append(cell)
        lines.append(f"| {r['label']} | {r['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(rows: list[dict]) -> str:
    """Says in words whether SICOG beat the baseline on overall QA accuracy (mean over seeds).

    A difference counts only when it exceeds the larger seed standard deviation, which needs at
    least two seeds of each.
    """
    by = {r["variant"]: r for r in rows}
    if "baseline" not in by or "sicog" not in by or "QA overall" not in by["sicog"]:
        return "The table has no baseline/SICOG pair to compare."
    b, s = by["baseline"], by["sicog"]
    diff = s["QA overall"] - b["QA overall"]
    numbers = f"{100 * s['QA overall']:.1f} vs {100 * b['QA overall']:.1f} (difference {100 * diff:+.1f} points"
    if min(b["seeds"], s["seeds"]) < 2:
        return (f"SICOG against the baseline on overall QA accuracy: {numbers} on one seed). One seed gives no "
                "measure of seed noise, so this table cannot say that either is better; run more seeds.")
    noise = max(b["QA overall std"], s["QA overall std"])
    if diff > noise:
        word = "beats"
    elif diff < -noise:
        word = "is worse than"
    else:
        word = "does not separate from"
    return f"SICOG {word} the baseline on overall QA accuracy: {numbers}; largest seed std {100 * noise:.1f}; {s['seeds']} seeds)."


def blind_control(result: CycleResult) -> list[dict]:
    """QA overall and POPE F1 with each model's own images and with shuffled images (first seed)."""
    seed = result.seeds[0]
    rows = []
    for name, evaluation in result.blind.items():
        true = row_metrics(result.evals[(name, seed)].scores())
        shuffled = row_metrics(evaluation.scores())
        row = {"variant": name}
        for c in ("QA overall", "POPE F1"):
            if c in true and c in shuffled:
                row[c], row[f"{c} shuffled"] = true[c], shuffled[c]
        rows.append(row)
    return rows


def not_run(result: CycleResult, names: tuple[str, ...]) -> list[str]:
    """A line naming the rows of `names` this run did not include (empty when it ran them all)."""
    absent = [n for n in names if not result.has_row(n)]
    return [f"Not run: {', '.join(absent)} (not among this run's rows).", ""] if absent else []


def blind_lines(rows: list[dict], missing: list[str] = ()) -> list[str]:
    if not rows:
        return list(missing)
    lines = ["## Blind control: does the model read the image?", "",
             "The same model and questions, each shown another record's image (`sicog evaluate --images shuffled`). "
             "A model that reads the image falls towards chance; equal scores mean it answers from the text alone.",
             "", "| Model | QA overall: own images | shuffled | POPE F1: own images | shuffled |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        cells = [f"{100 * r[c]:.1f}" if c in r else "n/a"
                 for c in ("QA overall", "QA overall shuffled", "POPE F1", "POPE F1 shuffled")]
        lines.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
    return lines + [""] + list(missing)


def probe_lines(probes: dict[str, dict], missing: list[str] = ()) -> list[str]:
    """The `sicog probe` tables of the headline models (first seed), gates included."""
    from sicog.evaluate.probe import format_table

    if not probes:
        return list(missing)
    lines = ["## Perception gates: what the image features carry, and whether the answers use them", "",
             "`sicog probe` on the eval split (first seed): linear probes of the vision tower and the connector "
             "(fit on `align` images, tested on `sft` images), and the teacher-forced answers with each record's "
             "own image and with another record's image.", ""]
    for name, probe in probes.items():
        lines += [f"### {name}", "", format_table(probe), ""]
    return lines + list(missing)


def gains(result: CycleResult, cost: list[dict]) -> list[dict]:
    """Per row: QA-overall and POPE-F1 gain over the baseline (paired by seed: mean and std of the
    per-seed differences), the share of the oracle's gain it recovers, and its cost: the wall time and
    training tokens of the steps it used beyond the model it starts from (the baseline, or the
    previous round), with minutes per QA point gained."""
    per = {key: row_metrics(evaluation.scores()) for key, evaluation in result.evals.items()}
    wall = {c["step"]: c for c in cost}
    used = result.steps
    seeds0 = result.seeds[0]

    def diffs(name: str, column: str) -> list[float]:
        return [per[(name, s)][column] - per[("baseline", s)][column] for s in result.seeds
                if (name, s) in per and ("baseline", s) in per and column in per[(name, s)]]

    oracle = diffs("oracle", "QA overall")
    oracle_gain = statistics.fmean(oracle) if oracle else None
    rows = []
    for v in result.variants:
        qa = diffs(v.name, "QA overall")
        if v.is_baseline or not qa:
            continue
        row = {"variant": v.name, "label": v.label, "seeds": len(qa)}
        row["QA gain"], row["QA gain std"] = _mean_std(qa)
        pope = diffs(v.name, "POPE F1")
        if pope:
            row["POPE F1 gain"], row["POPE F1 gain std"] = _mean_std(pope)
        if oracle_gain is not None and oracle_gain > 0 and v.name != "oracle":
            row["share of oracle gain"] = row["QA gain"] / oracle_gain
        # sorted: the float sum comes out the same on every run (a set's order changes with the hash seed)
        own = sorted(set(used.get((v.name, seeds0), [])) - set(used.get((v.previous, seeds0), [])))
        if own:
            row["extra wall s"] = sum(wall[s]["wall_s"] for s in own if s in wall)
            row["extra train tokens"] = sum(wall[s].get("train_tokens") or 0 for s in own if s in wall)
            if row["QA gain"] > 0:
                row["wall min per QA point"] = row["extra wall s"] / 60 / (100 * row["QA gain"])
        rows.append(row)
    return rows


def gain_lines(rows: list[dict], oracle_present: bool) -> list[str]:
    if not rows:
        return []
    lines = ["## Gain over the baseline", "",
             "Per-seed differences from the baseline trained with the same seed (mean ± std over seeds, points). "
             "Share of the oracle's gain: the row's QA gain over the oracle's (stage 1.5 on the pools' gold texts)"
             + ("" if oracle_present else "; the oracle row was not run") + ". Cost: wall time and training tokens of "
             "the steps the row used beyond the model it starts from (the baseline, or the previous round).", "",
             "| Model | seeds | QA overall gain | POPE F1 gain | share of oracle gain | extra wall min | extra training tokens | min per QA point |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def points(r: dict, c: str) -> str:
        if c not in r:
            return "n/a"
        return f"{100 * r[c]:+.1f}" + (f" ± {100 * r[c + ' std']:.1f}" if r["seeds"] > 1 else "")

    for r in rows:
        share = pct(r["share of oracle gain"]) if "share of oracle gain" in r else "n/a"
        wall = f"{r['extra wall s'] / 60:.1f}" if "extra wall s" in r else "n/a"
        tokens = f"{r['extra train tokens']:,}" if r.get("extra train tokens") else "n/a"
        per_point = f"{r['wall min per QA point']:.1f}" if "wall min per QA point" in r else "n/a"
        lines.append(f"| {r['label']} | {r['seeds']} | {points(r, 'QA gain')} | {points(r, 'POPE F1 gain')} | "
                     f"{share} | {wall} | {tokens} | {per_point} |")
    return lines + [""]


def costs(result: CycleResult) -> list[dict]:
    """Wall time of every finished step of the run folder, plus training tokens where this run's
    training steps reported them."""
    out = []
    for step, wall in walltimes(result.out).items():
        row = {"step": step, "wall_s": wall}
        if step in result.trained:
            summary = result.trained[step].train_summary()
            row["train_tokens"] = summary.get("metrics", {}).get("num_input_tokens_seen")
            row["train_samples"] = summary.get("samples")
        out.append(row)
    return out


def write_xlsx(path: Path, sheets: dict[str, list[dict]]) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name[:31])
        if not rows:
            continue
        keys = list(dict.fromkeys(k for r in rows for k in r))
        ws.append(keys)
        for r in rows:
            ws.append([r.get(k) if not isinstance(r.get(k), (list, dict)) else json.dumps(r.get(k)) for k in keys])
    tmp = path.with_suffix(".tmp.xlsx")
    wb.save(tmp)
    tmp.replace(path)


def write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def reproduce_command(result: CycleResult) -> str:
    """The command line that reruns this report: rows and seeds only where they differ from the plan."""
    plan = result.plan
    command = f"sicog reproduce --out {result.out} --size {plan.size}"
    rows = [v.name for v in result.variants]
    if rows != [v.name for v in get_variants(plan.rows)]:
        command += " --rows " + ",".join(rows)
    if list(result.seeds) != list(plan.seeds):
        command += " --seeds " + ",".join(str(s) for s in result.seeds)
    return command


def curve_models(result: CycleResult) -> list[Model]:
    """The training curves drawn: stage 1 and the baseline's stage 2, SICOG's stage 1.5 and stage 2 (first seed)."""
    seed = result.seeds[0]
    baseline, sicog = result.models.get(("baseline", seed)), result.models.get(("sicog", seed))
    models = [baseline.stage1, baseline.final] if baseline else []
    return models + ([sicog.stage1_5, sicog.final] if sicog else [])


def diagnostics_lines(diag: dict, result: CycleResult) -> list[str]:
    lines = ["## Curation diagnostics (SICOG, first seed)", ""]
    if not diag:
        return lines + not_run(result, ("sicog",))
    for kind, d in diag.items():
        lines.append(f"- **{kind}** ({d['inputs']} inputs x {d['candidates_per_input']} candidates, judged against "
                     f"the world's ground truth): candidate accuracy {100 * d['candidate_accuracy']:.1f}%, random pick "
                     f"{100 * d['random_pick_precision']:.1f}%, argmax {100 * d['argmax_precision']:.1f}%, kept at "
                     f"tau={d['tau']:g}: {100 * d['kept_fraction']:.1f}% of inputs with precision "
                     f"{100 * d['kept_precision']:.1f}%; AUROC of the self-consistency score for correctness "
                     f"{d['auroc']:.3f}" + (f"; vote method: argmax precision {100 * d['vote_argmax_precision']:.1f}%, "
                                            f"AUROC {d['vote_auroc']:.3f}" if "vote_auroc" in d else "") + ".")
    lines += ["", "Kept fraction and precision against the threshold:", ""]
    for kind, d in diag.items():
        lines.append(f"- {kind}: " + ", ".join(f"tau {t['tau']:g}: kept {pct(t['kept_fraction'])} "
                                               f"precision {pct(t['precision'])}" for t in d["by_threshold"]))
    return lines


def write_report(result: CycleResult) -> str:
    """results.md/.csv/.xlsx, gains.csv, diagnostics.json and plots/ under the run folder; returns the Markdown."""
    out = result.out
    columns, rows = results_rows(result)
    diag = curation_diagnostics(result)
    blind = blind_control(result)
    probes = {name: probe.result() for name, probe in result.probes.items()}
    cost = costs(result)
    gain_rows = gains(result, cost)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    plot_variants(plots / "variants.png", columns, rows)
    plot_training_curves(plots / "training_curves.png", curve_models(result))
    plot_diagnostics(plots, diag)

    headline = not_run(result, ("baseline", "sicog"))
    total = sum(c["wall_s"] for c in cost)
    lines = [f"# SICOG on the mini world ({result.plan.size})", "",
             f"Command: `{reproduce_command(result)}`; steps' total wall time {total / 60:.1f} min.",
             "", markdown_table(columns, rows), "", verdict(rows), "",
             "Columns are percentages on the world's held-out benchmarks (QA accuracy by skill and overall, "
             "POPE F1, caption object recall and hallucination rate CHAIR-i: lower is better); mean ± std over seeds.",
             ""]
    lines += diagnostics_lines(diag, result)
    lines += [""] + gain_lines(gain_rows, result.has_row("oracle"))
    lines += blind_lines(blind, headline)
    lines += probe_lines(probes, headline)
    lines += ["## Cost (wall time per step)", "", "| step | wall s | training tokens |", "|---|---:|---:|"]
    lines += [f"| {c['step']} | {c['wall_s']:.1f} | {c.get('train_tokens') or ''} |" for c in cost]
    md = "\n".join(lines) + "\n"
    atomic_write_text(out / "results.md", md)
    write_csv(out / "results.csv", rows)
    write_json(out / "diagnostics.json", diag)
    write_csv(out / "gains.csv", gain_rows)
    write_xlsx(out / "results.xlsx", {
        "results": rows,
        "diagnostics": [{"kind": k, **{x: y for x, y in d.items() if x not in _LISTS}} for k, d in diag.items()],
        "blind_control": blind, "gains": gain_rows, "costs": cost,
        "gates": [{"model": name, **g} for name, probe in probes.items() for g in probe["gates"]]})
    return md
