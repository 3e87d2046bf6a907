"""Self-consistency scores (SPEC section 1, step 3) and the choices made from them.

Two scoring methods:

- `mbr_scores`: the paper's. Candidate i of an input scores the mean inner product of its
  embedding with the embeddings of all N candidates of that input, itself included:
  `s_i = mean_j <e_i, e_j>`. The embeddings must already be L2-normalised (so the inner product is
  the cosine similarity); this function does not normalise them.
- `vote_scores`: for reasoning, the fraction of candidates whose normalised final answer equals
  the candidate's own (majority voting), keyed by `sicog.data.answers.normalise_answer` - the same
  key the benchmark scorers and the judge use.

Both return one score per candidate; `best_index` takes the argmax (the lowest index among ties)
and `lower_half` gives the candidates a rejected side is drawn from.
"""
from __future__ import annotations

import torch

from sicog.data.answers import normalise_answer


def mbr_scores(embeddings: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scores `[inputs, N]` from L2-normalised embeddings `[inputs, N, dim]`.

    `s[b, i] = mean_j <e[b, i], e[b, j]>` over all N candidates j, i included. With `mask`
    (`[inputs, N]`, True = candidate present) the mean runs over the present candidates only, and
    absent candidates score `-inf`, so they are never the argmax.
    """
    if embeddings.dim() != 3:
        raise ValueError(f"expected embeddings [inputs, N, dim], got shape {tuple(embeddings.shape)}")
    sims = torch.bmm(embeddings, embeddings.transpose(1, 2))
    if mask is None:
        return sims.mean(dim=-1)
    if mask.shape != embeddings.shape[:2]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match embeddings {tuple(embeddings.shape[:2])}")
    weights = mask.to(sims.dtype)
    counts = weights.sum(dim=-1, keepdim=True).clamp_min(1.0)
    scores = (sims * weights[:, None, :]).sum(dim=-1) / counts
    return scores.masked_fill(~mask.bool(), float("-inf"))


def vote_scores(answers: list[str]) -> list[float]:
    """Fraction of the candidates whose normalised answer equals each candidate's (itself included)."""
    keys = [normalise_answer(a) for a in answers]
    n = len(keys)
    return [sum(k == other for other in keys) / n for k in keys] if n else []


def best_index(scores: list[float]) -> int:
    """Index of the highest score; the lowest index wins a tie (deterministic)."""
    if not scores:
        raise ValueError("no scores")
    best = 0
    for i, s in enumerate(scores):
        if s > scores[best]:
            best = i
    return best


def ranking(scores: list[float]) -> list[int]:
    """Candidate indices from the highest score to the lowest; ties keep index order."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def lower_half(scores: list[float]) -> list[int]:
    """The lower-scoring half of the candidates: the last `N // 2` of `ranking(scores)`.

    Never contains the argmax when N >= 2; empty when N < 2.
    """
    order = ranking(scores)
    k = len(order) // 2
    return order[len(order) - k:] if k else []
