"""Next-token choice for the candidate engine: greedy, or temperature / top-k / top-p sampling.

Randomness is counter-based: the uniform number that picks row r's token at step t is a hash of
(row key, t), where the row key comes from (seed, record id, candidate index). A candidate
therefore depends only on its own inputs and not on batch size, batch order, finished rows being
dropped, the rank count, or the device.
"""
from __future__ import annotations

import numpy as np
import torch

from sicog.generate.shard import derive_seed

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def row_keys(seed: int, record_id: str, num_candidates: int) -> list[int]:
    """One 63-bit key per candidate of a record."""
    return [derive_seed(seed, record_id, "candidate", k) for k in range(num_candidates)]


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def uniforms(keys: np.ndarray, step: int) -> np.ndarray:
    """Uniform float64 numbers in [0, 1), one per key, for decoding step `step`."""
    with np.errstate(over="ignore"):
        x = keys.astype(np.uint64) + np.uint64(step + 1) * _GOLDEN
    return (_splitmix64(_splitmix64(x)) >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)


def choose_tokens(
    logits: torch.Tensor, u: torch.Tensor, temperature: float, top_p: float = 1.0, top_k: int = 0
) -> torch.Tensor:
    """Token ids [R] from logits [R, V] and uniforms u [R]; greedy (argmax) when temperature <= 0.

    Sampling keeps the top_k most likely tokens (0: all), then the smallest prefix of them whose
    probability mass reaches top_p, and inverts the cumulative distribution at u.
    """
    if temperature <= 0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / temperature
    if 0 < top_k < scaled.shape[-1]:
        vals, idx = scaled.topk(top_k, dim=-1, sorted=True)
    else:
        vals, idx = scaled.sort(dim=-1, descending=True, stable=True)
    probs = vals.softmax(dim=-1)
    if top_p < 1.0:
        mass_before = probs.cumsum(dim=-1) - probs
        probs = probs.masked_fill(mass_before >= top_p, 0.0)  # the most likely token always stays
    cdf = probs.double().cumsum(dim=-1)
    target = u.to(cdf.device, torch.float64).unsqueeze(-1) * cdf[:, -1:]
    last_kept = (probs > 0).sum(dim=-1, keepdim=True) - 1  # kept tokens are a prefix of the sorted order
    pick = torch.minimum(torch.searchsorted(cdf, target, right=True), last_kept)
    return idx.gather(-1, pick).squeeze(-1)
