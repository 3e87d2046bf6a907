"""Scorers for the mini world's benchmarks: pure functions over records and predictions.

- QA (`qa.jsonl`): accuracy overall, per skill and per type. Short answers are compared after
  normalisation (lowercase, punctuation and articles removed, number words as digits); multiple
  choice by the option letter read from "B", "(B)", "B. red", "The answer is B" or the option's text;
  yes/no questions by the yes/no read from the answer. A step-by-step answer is scored on the body
  of its final (conclusion) step.
- POPE (`pope.jsonl`): accuracy, precision, recall, F1 (positive = yes) and the yes-ratio, overall
  and per variant; an answer with no yes or no counts as "no" and is reported as invalid.
- Captions (`captions.jsonl`): object recall, precision, hallucination (CHAIR_i over mentions,
  CHAIR_s over captions) and the share of fully correct captions, against each scene graph.

A prediction is `{"id": ..., "prediction": text}`.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from sicog.data.answers import normalise_answer  # noqa: F401  (re-exported)
from sicog.data.records import read_records, record_id
from sicog.evaluate.answer_check import extract_choice, qa_correct, yes_no  # noqa: F401  (re-exported)
from sicog.evaluate.judge import judge_caption

def _gold(rec: dict, index: int) -> str:
    if rec.get("answer") in (None, ""):
        raise ValueError(f"benchmark record {record_id(rec, index)} has no answer")
    return str(rec["answer"])


def _by_id(predictions: list[dict]) -> dict[str, str]:
    return {str(p["id"]): p.get("prediction") or "" for p in predictions}


def _rate(hits: int, n: int) -> float:
    return hits / n if n else 0.0


def score_qa(records: list[dict], predictions: list[dict]) -> dict:
    """Accuracy overall, per skill and per type; a record without a prediction counts as wrong."""
    preds = _by_id(predictions)
    groups: dict[str, dict[str, list[int]]] = {"skill": defaultdict(list), "type": defaultdict(list)}
    results, missing = [], 0
    for i, rec in enumerate(records):
        rid = record_id(rec, i)
        _gold(rec, i)
        if rid not in preds:
            missing += 1
        ok = int(rid in preds and qa_correct(preds[rid], rec))
        results.append(ok)
        groups["skill"][rec.get("skill", "unknown")].append(ok)
        groups["type"][rec.get("type", "mc" if rec.get("options") else "short")].append(ok)
    accuracy = _rate(sum(results), len(results))
    return {
        "headline": {"accuracy": accuracy},
        "accuracy": accuracy,
        "n": len(results),
        "missing": missing,
        "per_skill": {k: {"accuracy": _rate(sum(v), len(v)), "n": len(v)} for k, v in sorted(groups["skill"].items())},
        "per_type": {k: {"accuracy": _rate(sum(v), len(v)), "n": len(v)} for k, v in sorted(groups["type"].items())},
    }


def _pope_metrics(pairs: list[tuple[str, str | None]]) -> dict:
    tp = sum(g == "yes" and p == "yes" for g, p in pairs)
    fp = sum(g == "no" and p == "yes" for g, p in pairs)
    fn = sum(g == "yes" and p != "yes" for g, p in pairs)
    tn = sum(g == "no" and p != "yes" for g, p in pairs)
    precision = _rate(tp, tp + fp)
    recall = _rate(tp, tp + fn)
    return {
        "accuracy": _rate(tp + tn, len(pairs)),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": _rate(tp + fp, len(pairs)),
        "invalid": sum(p is None for _, p in pairs),
        "n": len(pairs),
    }


def score_pope(records: list[dict], predictions: list[dict]) -> dict:
    """POPE metrics overall and per variant; a missing prediction counts as invalid."""
    preds = _by_id(predictions)
    pairs, by_variant = [], defaultdict(list)
    for i, rec in enumerate(records):
        rid = record_id(rec, i)
        pred = yes_no(preds[rid]) if rid in preds else None
        pair = (_gold(rec, i).strip().lower(), pred)
        pairs.append(pair)
        by_variant[rec.get("variant", "all")].append(pair)
    overall = _pope_metrics(pairs)
    overall["headline"] = {"accuracy": overall["accuracy"], "f1": overall["f1"]}
    overall["per_variant"] = {k: _pope_metrics(v) for k, v in sorted(by_variant.items())}
    return overall


def score_captions(records: list[dict], predictions: list[dict]) -> dict:
    """Object recall/precision, CHAIR_i/CHAIR_s hallucination and the share of correct captions.

    Each record needs its `scene` (the world's captions records carry it). A record without a
    prediction is judged as an empty caption.
    """
    preds = _by_id(predictions)
    judged = []
    for i, rec in enumerate(records):
        if "scene" not in rec:
            raise ValueError(f"caption record {record_id(rec, i)} has no scene graph")
        judged.append(judge_caption(preds.get(record_id(rec, i), ""), rec["scene"]))
    n = len(judged)
    mentions = sum(len(j["matched"]) + len(j["hallucinated"]) for j in judged)
    result = {
        "n": n,
        "missing": sum(record_id(r, i) not in preds for i, r in enumerate(records)),
        "recall": _rate(sum(j["recall"] for j in judged), n),
        "precision": _rate(sum(j["precision"] for j in judged), n),
        "chair_i": _rate(sum(len(j["hallucinated"]) for j in judged), mentions),
        "chair_s": _rate(sum(bool(j["hallucinated"]) for j in judged), n),
        "attribute_errors": sum(len(j["attribute_errors"]) for j in judged),
        "accuracy": _rate(sum(j["correct"] for j in judged), n),
    }
    result["headline"] = {k: result[k] for k in ("recall", "precision", "chair_i", "accuracy")}
    return result


SCORERS = {"qa": score_qa, "pope": score_pope, "captions": score_captions}


def _attach_scenes(world: Path, records: list[dict]) -> list[dict]:
    need = [r for r in records if "scene" not in r]
    if not need:
        return records
    scenes = {s["id"]: s for s in read_records(Path(world) / "world.jsonl")}
    out = []
    for r in records:
        if "scene" not in r:
            key = r.get("scene_id") or Path(str(r.get("image", ""))).stem
            if key not in scenes:
                raise ValueError(f"caption record {r.get('id')}: no scene {key!r} in {world}/world.jsonl")
            r = {**r, "scene": scenes[key]}
        out.append(r)
    return out


def score_benchmark(world: str | Path, split: str, benchmark: str, records: list[dict], predictions: list[dict]) -> dict:
    """Scores of one benchmark of a world split; caption records lacking a scene get it from world.jsonl."""
    if benchmark not in SCORERS:
        raise ValueError(f"unknown benchmark {benchmark!r}; use one of {sorted(SCORERS)}")
    if benchmark == "captions":
        records = _attach_scenes(Path(world), records)
    return SCORERS[benchmark](records, predictions)
