"""The optimiser loop of `sicog world pretrain`: AdamW with warm-up and cosine decay, shared by the
CLIP, the LM and the LM's instruction phase."""
from __future__ import annotations

import logging
import math

from tqdm import tqdm

log = logging.getLogger("sicog.world.pretrain")   # one logger name for the whole command


def lr_at(step: int, steps: int, lr: float) -> float:
    warmup = max(1, min(20, steps // 10))
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def full_batches(n: int, batch_size: int, gen, make):
    """Endless epochs over `n` items, each in a fresh order drawn from `gen` and cut into batches of
    `batch_size` (a last, smaller one is dropped); yields `make(indices)` of each batch."""
    import torch

    while True:
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            if len(idx) == batch_size:
                yield make(idx)


def train_loop(model, batches, steps: int, lr: float, desc: str, loss_fn=None, extra=None,
               after_step=None) -> list[float]:
    """AdamW with warm-up and cosine decay; `loss_fn(model, batch)` (default: the model's own loss)
    and the parameters of `extra`, a module trained alongside (e.g. an auxiliary head).
    `after_step(step)` (1-based) runs after each optimiser step, e.g. a held-out evaluation."""
    import torch

    params = list(model.parameters()) + (list(extra.parameters()) if extra is not None else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    losses = []
    model.train()
    bar = tqdm(range(steps), desc=desc, unit="step")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr)
        batch = next(batches)
        loss = loss_fn(model, batch) if loss_fn is not None else model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(round(float(loss.detach()), 5))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if step % 50 == 0 or step == steps - 1:
            log.info("%s step %d/%d loss %.4f", desc, step + 1, steps, losses[-1])
        if after_step is not None:
            after_step(step + 1)
            model.train()
    model.eval()
    return losses

