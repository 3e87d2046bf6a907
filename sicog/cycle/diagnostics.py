"""How well does self-consistency pick correct candidates? Measured against the world's ground truth.

For the SICOG run's caption and reasoning candidates, every candidate is judged (captions against
the scene graph, answers against the pool's gold answer), and compared with its self-consistency
score: precision of the argmax and of the kept set against a random pick, kept fraction and
precision against the threshold, AUROC of the score for correctness, embedding against vote.
Computed from finished outputs only: the vote curation is a step of the cycle.
"""
from __future__ import annotations

import random
from pathlib import Path

from sicog.cycle.outputs import CycleResult
from sicog.data.records import read_records
from sicog.evaluate.judge import judge_answer, judge_caption


def auroc(scores: list[float], labels: list[bool]) -> float:
    """Probability that a correct candidate scores above an incorrect one (ties count half); nan if one class is empty."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return float("nan")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, labels) if y)
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def judged_candidates(candidates_file: Path, kind: str, world: Path) -> dict[str, list[bool]]:
    """{input id: [is candidate i correct]} for a merged candidates file."""
    if kind == "captions":
        scenes = {s["image"]: s for s in read_records(world / "world.jsonl")}
        judge = lambda rec, text: judge_caption(text, scenes[rec["image"]])["correct"]  # noqa: E731
    else:
        gold = {r["id"]: r for r in read_records(world / "data" / "pool_gold" / "cot_short.jsonl")}
        judge = lambda rec, text: judge_answer(text, gold[rec["id"]])  # noqa: E731
    return {str(rec["id"]): [bool(c and c.strip()) and judge(rec, c) for c in rec["candidates"]]
            for rec in read_records(candidates_file)}


def score_diagnostics(scores_file: Path, correct: dict[str, list[bool]], thresholds: list[float], tau: float,
                      seed: int = 0) -> dict:
    results = [r for r in read_records(scores_file) if r["id"] in correct]
    rng = random.Random(seed)
    flat_s, flat_y, argmax_ok, random_ok = [], [], [], []
    for r in results:
        ok = correct[r["id"]]
        usable = [i for i, s in enumerate(r["scores"]) if s is not None]
        flat_s += [r["scores"][i] for i in usable]
        flat_y += [ok[i] for i in usable]
        argmax_ok.append(ok[r["argmax"]])
        random_ok.append(ok[rng.choice(usable)])

    def kept(t: float) -> dict:
        sel = [ok for r, ok in zip(results, argmax_ok) if r["max_score"] >= t]
        return {"tau": t, "kept_fraction": len(sel) / len(results) if results else 0.0,
                "precision": sum(sel) / len(sel) if sel else float("nan")}

    at_tau = kept(tau)
    n = len(results)
    return {
        "inputs": n,
        "candidates_per_input": max((len(r["scores"]) for r in results), default=0),
        "candidate_accuracy": sum(flat_y) / len(flat_y) if flat_y else float("nan"),
        "random_pick_precision": sum(random_ok) / n if n else float("nan"),
        "argmax_precision": sum(argmax_ok) / n if n else float("nan"),
        "tau": tau,
        "kept_fraction": at_tau["kept_fraction"],
        "kept_precision": at_tau["precision"],
        "auroc": auroc(flat_s, flat_y),
        "by_threshold": [kept(t) for t in thresholds],
        "scores": flat_s,
        "correct": flat_y,
    }


def curation_diagnostics(result: CycleResult) -> dict:
    """Diagnostics of the SICOG row's first seed (captions and reasoning), with the vote method beside,
    from the finished outputs the cycle lists in `result.diagnostics` (empty: the run has no SICOG row)."""
    plan, seed = result.plan, result.seeds[0]
    out = {}
    for kind, inputs in result.diagnostics.items():
        correct = judged_candidates(inputs.candidates.existing(), kind, result.world)
        d = score_diagnostics(inputs.curation.scores, correct, plan.thresholds, plan.threshold, seed)
        if inputs.vote is not None:
            v = score_diagnostics(inputs.vote.scores, correct, plan.thresholds, plan.threshold, seed)
            d["vote_argmax_precision"], d["vote_auroc"] = v["argmax_precision"], v["auroc"]
        out[kind] = d
    return out
