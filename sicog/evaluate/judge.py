"""Is a generated caption or answer correct for its image? Judged against the world's ground truth.

Used to score captions and to measure how well self-consistency predicts correctness.
"""
from __future__ import annotations

from sicog.data.formats import cod_to_dd
from sicog.evaluate.answer_check import qa_correct
from sicog.world.parse import parse_caption


def caption_body(text: str) -> str:
    """The part of a caption that is judged: the step-5 body of a CoD caption, else the whole text."""
    return cod_to_dd(text or "") or (text or "").strip()


def judge_caption(text: str, scene: dict) -> dict:
    """Compare the objects a caption mentions with the scene graph.

    Returns `correct` (every object mentioned, nothing invented, no wrong size or label, no wrong
    stated count), `recall` (scene objects mentioned / scene objects), `precision` (mentioned
    objects that exist / mentioned objects; 1.0 when nothing is mentioned), `hallucination_rate`
    (1 - precision when something is mentioned, else 0.0), the object lists `matched`,
    `hallucinated`, `missed`, `attribute_errors` (wrong size or label on a matched object) and
    `count_ok` (None when no total is stated).
    """
    parsed = parse_caption(caption_body(text))
    gold = {f"{o['colour']} {o['shape']}": o for o in scene["objects"]}
    said = parsed["objects"]
    matched = [k for k in said if k in gold]
    hallucinated = [k for k in said if k not in gold]
    missed = [k for k in gold if k not in said]
    attribute_errors = []
    for k in matched:
        if said[k]["size"] is not None and said[k]["size"] != gold[k]["size"]:
            attribute_errors.append(f"{k}: size {said[k]['size']} (is {gold[k]['size']})")
        if said[k]["label"] is not None and said[k]["label"] != gold[k]["label"]:
            attribute_errors.append(f"{k}: label {said[k]['label']} (is {gold[k]['label']})")
    count_ok = None if parsed["count"] is None else parsed["count"] == len(gold)
    recall = len(matched) / len(gold) if gold else 1.0
    precision = len(matched) / len(said) if said else 1.0
    return {
        "correct": not missed and not hallucinated and not attribute_errors and count_ok is not False,
        "recall": recall,
        "precision": precision,
        "hallucination_rate": len(hallucinated) / len(said) if said else 0.0,
        "matched": matched,
        "hallucinated": hallucinated,
        "missed": missed,
        "attribute_errors": attribute_errors,
        "count_ok": count_ok,
    }


def judge_answer(text: str, qa_record: dict) -> bool:
    """Whether a generated answer (short, or a step-by-step answer judged on its conclusion) is correct.

    `qa_record` needs `answer` and, for multiple choice, `options` (the world's QA, POPE and pool
    gold records all qualify).
    """
    return qa_correct(text, qa_record)
