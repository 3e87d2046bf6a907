"""Next-token loss on supervised positions only, in chunks, without a full fp32 logits tensor.

The plain causal-LM loss builds logits for every position, `[batch, seq, vocab]`, and upcasts
them to fp32 for the cross-entropy: at 4 x 4096 tokens and Qwen2's 152,064-token vocabulary that
is ~5 GB in bf16 plus ~10 GB in fp32 (and the saved log-softmax), most of a GPU's peak. Only the
positions whose next token is supervised need logits, often well under half of them.

`supervised_lm_loss` therefore
1. selects the hidden states at supervised positions (after the usual one-token shift);
2. runs the LM head once on those rows only (one call, so ZeRO-3's parameter gathering around the
   head module works unchanged), keeping logits in the model's dtype;
3. computes the fp32 cross-entropy `chunk_rows` rows at a time, each chunk under activation
   checkpointing, so at most one chunk's fp32 logits (and their log-softmax) exist at once, in
   forward and again in backward.

The value is the same as transformers' `ForCausalLMLoss` (sum over supervised tokens divided by
`num_items_in_batch` when given, else their mean) to float tolerance.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
CHUNK_ROWS = 1024


def _chunk_ce_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def supervised_lm_loss(hidden: torch.Tensor, labels: torch.Tensor, lm_head: nn.Module,
                       num_items_in_batch: torch.Tensor | int | None = None,
                       chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """hidden [B, T, H] (last decoder layer, normed), labels [B, T] with IGNORE_INDEX -> scalar loss."""
    targets = labels[:, 1:].to(hidden.device)
    keep = targets != IGNORE_INDEX
    supervised = bool(keep.any())
    if not supervised:
        # Nothing to learn (e.g. the stand-in for a failed batch): one row at weight zero, so the
        # head still runs forward and backward as on every other rank (under ZeRO-3 an empty input
        # would skip the head's gradient reduction and desynchronise the ranks).
        keep = torch.zeros_like(keep)
        keep.view(-1)[0] = True
        targets = targets.clamp_min(0)
    rows = hidden[:, :-1][keep]                                                   # [N, H]
    targets = targets[keep]
    logits = lm_head(rows)                                                        # [N, V], model dtype
    total = logits.new_zeros((), dtype=torch.float32)
    for start in range(0, logits.shape[0], chunk_rows):
        piece, tgt = logits[start:start + chunk_rows], targets[start:start + chunk_rows]
        if torch.is_grad_enabled() and piece.requires_grad:
            total = total + checkpoint(_chunk_ce_sum, piece, tgt, use_reentrant=False)
        else:
            total = total + _chunk_ce_sum(piece, tgt)
    if not supervised:
        return total * 0.0
    if num_items_in_batch is None:
        return total / int(keep.sum())
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch
