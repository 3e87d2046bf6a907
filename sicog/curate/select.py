"""From checked inputs to curation results: scores per input, the kept sets per threshold,
stage-1.5 training records and preference pairs.

A result (one per scored input, JSON-ready) holds every candidate's score (`None` for a candidate
left out of the comparison because it is empty), the argmax index and the max score. Everything
is deterministic: ties go to the lowest index and the rejected side of a pair is drawn with a
generator seeded by (seed, id), so the outcome does not depend on order or process count.
"""
from __future__ import annotations

import random
import statistics

from sicog.curate.candidates import CandidateInput
from sicog.curate.embed import Encoder, embed_groups
from sicog.curate.scoring import best_index, lower_half, mbr_scores, vote_scores

METHODS = ("embedding", "vote", "random")   # random: the no-curation ablation (a seeded pick per input)


def input_problem(item: CandidateInput, method: str, min_candidates: int) -> str | None:
    """Why an input cannot be scored with these settings, or None."""
    if len(item.usable) < min_candidates:
        return (f"{len(item.usable)} usable candidate(s) of {len(item.candidates)}: "
                f"self-consistency needs at least {min_candidates} (--min-candidates)")
    if method == "vote" and (item.kind == "cod" or (item.generation or {}).get("task") == "caption"):
        return "--method vote compares final answers; this input holds captions (use --method embedding)"
    return None


def _result(item: CandidateInput, method: str, used_scores: list[float]) -> dict:
    scores: list[float | None] = [None] * len(item.candidates)
    for i, s in zip(item.usable, used_scores):
        scores[i] = float(s)
    local = best_index(used_scores)
    return {
        "id": item.id,
        "kind": item.kind,
        "method": method,
        "n_candidates": len(item.candidates),
        "n_used": len(item.usable),
        "duplicates": item.duplicates(),
        "scores": scores,
        "argmax": item.usable[local],
        "max_score": float(used_scores[local]),
    }


def random_scores(item: CandidateInput, seed: int) -> list[float]:
    """The no-curation ablation: 1.0 for one usable candidate drawn with a generator seeded by
    (seed, id), 0.0 for the others. Every threshold up to 1 keeps the pick, and the rows it trains
    go through the same record writer as curated ones: they differ only in how the candidate was chosen."""
    pick = random.Random(f"{seed}:random-pick:{item.id}").randrange(len(item.usable))
    return [1.0 if k == pick else 0.0 for k in range(len(item.usable))]


def score_inputs(items: list[CandidateInput], method: str, encoder: Encoder | None = None,
                 batch_size: int = 64, seed: int = 0) -> list[dict]:
    """One result per input, in order. `encoder` is needed for the embedding method, `seed` for random."""
    if not items:
        return []
    if method == "random":
        return [_result(item, method, random_scores(item, seed)) for item in items]
    if method == "vote":
        return [_result(item, method, vote_scores(item.compared_parts())) for item in items]
    if method != "embedding":
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if encoder is None:
        raise ValueError("the embedding method needs an encoder")
    embeddings, mask = embed_groups(encoder, [item.compared_parts() for item in items], batch_size)
    scores = mbr_scores(embeddings, mask).cpu()
    return [_result(item, method, scores[b, : len(item.usable)].tolist()) for b, item in enumerate(items)]


def kept(results: list[dict], tau: float) -> list[dict]:
    """Results whose max score reaches the threshold."""
    return [r for r in results if r["max_score"] >= tau]


def training_record(item: CandidateInput, result: dict) -> dict:
    """A stage-1.5 record in LLaVA format: the generation prompt and the chosen candidate."""
    record: dict = {"id": item.id}
    if item.image:
        record["image"] = item.image
    record["conversations"] = [
        {"from": "human", "value": item.prompt},
        {"from": "gpt", "value": item.full_text(result["argmax"])},
    ]
    return record


def preference_pair(item: CandidateInput, result: dict, seed: int) -> tuple[dict | None, str | None]:
    """`{id, image, prompt, chosen, rejected}` with chosen = the argmax candidate and rejected = a
    seeded random candidate of the lower-scoring half whose text differs from the chosen one;
    or (None, reason)."""
    used = [s for s in result["scores"] if s is not None]
    if len(used) < 2:
        return None, "a single usable candidate: no rejected side"
    chosen = item.full_text(result["argmax"])
    pool = [item.usable[k] for k in lower_half(used)]
    pool = [i for i in pool if item.full_text(i) != chosen]
    if not pool:
        return None, "no candidate in the lower-scoring half differs from the chosen one"
    rejected_index = random.Random(f"{seed}:{item.id}").choice(pool)
    pair: dict = {"id": item.id}
    if item.image:
        pair["image"] = item.image
    pair.update(prompt=item.prompt, chosen=chosen, rejected=item.full_text(rejected_index))
    return pair, None


def score_stats(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def quantile(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "count": len(values),
        "mean": statistics.fmean(values),
        "std": statistics.pstdev(values),
        "min": ordered[0],
        "p10": quantile(0.10),
        "median": statistics.median(values),
        "p90": quantile(0.90),
        "max": ordered[-1],
    }
