"""The LM instruction phase's batches: one batch padded to its longest row against two length groups.

`sicog world pretrain` instruction-tunes the tiny LM on `data/lm_chat.jsonl`, whose conversations
are short (one existence question after the context, 50-140 tokens) or long (six questions,
230-350 tokens). One batch padded to its longest row spends most of its tokens on padding;
`length_groups` cuts it into two groups, each padded to its own width, and `grouped_loss` weights the
groups' losses by their answer tokens, so the loss (and gradient) equals the padded batch's.

Two copies of a random tiny-tier LM (the world's tokenizer) take the same batches, in the same
order, of both parts of the phase (part 1: the six-question conversations at batch 16; focus part: 3/4
single-question conversations at batch 32); steps are interleaved (padded step k, grouped step k, the
order swapped every step), so load from other processes hits both alike. Prints tokens per step
(with padding), seconds per step, the ratio, and the largest loss difference between the copies.

    python benchmarks/bench_instruct_batches.py [--world DIR] [--steps 20]

Without --world a `mini` world is built in a temporary folder (about a minute).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sicog.data.records import read_records  # noqa: E402
from sicog.world.pretrain_instruct import (_chat_tensors, focus_batches, grouped_loss, is_single_question,  # noqa: E402
                                           length_groups)
from sicog.world.pretrain_loop import full_batches  # noqa: E402


def tiny_lm(tokenizer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from sicog.model.tiers import load_tier

    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(**load_tier("tiny")["text"], vocab_size=len(tokenizer)))


def run(world: Path, steps: int) -> None:
    import copy

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(world / "tokenizer"))
    records = read_records(world / "data/lm_chat.jsonl")
    ids, mask, labels = _chat_tensors(tokenizer, records, 512)
    lengths = mask.sum(1)
    single = [i for i, r in enumerate(records) if is_single_question(r)]
    multi = [i for i, r in enumerate(records) if not is_single_question(r)]
    models = {"padded": tiny_lm(tokenizer)}
    models["grouped"] = copy.deepcopy(models["padded"])
    opts = {k: torch.optim.AdamW(m.parameters(), lr=3e-4) for k, m in models.items()}

    def padded(idx):
        width = int(lengths[idx].max())
        return [{"input_ids": ids[idx, :width], "attention_mask": mask[idx, :width], "labels": labels[idx, :width]}]

    def grouped(idx):
        return [{"input_ids": ids[g, :w], "attention_mask": mask[g, :w], "labels": labels[g, :w]}
                for g, w in length_groups(idx, lengths)]

    make = {"padded": padded, "grouped": grouped}
    print(f"world {world}: {len(records)} conversations, {len(single)} single-question; torch threads "
          f"{torch.get_num_threads()}")
    first = torch.tensor(multi)
    for part, batches in (("part 1 (six-question conversations, batch 16)",
                           full_batches(len(first), 16, torch.Generator().manual_seed(0), lambda i: first[i])),
                          ("focus (batch 32, 3/4 single)", focus_batches(single, multi, 32, 0.75,
                                                                         torch.Generator().manual_seed(0), lambda i: i))):
        secs = {k: [] for k in models}
        tokens = {k: [] for k in models}
        diff = 0.0
        for step in range(steps):
            idx = next(batches)
            order = list(models) if step % 2 == 0 else list(models)[::-1]
            losses = {}
            for k in order:
                groups = make[k](idx)
                t0 = time.perf_counter()
                loss = grouped_loss(models[k], groups)
                opts[k].zero_grad(set_to_none=True)
                loss.backward()
                opts[k].step()
                secs[k].append(time.perf_counter() - t0)
                tokens[k].append(sum(g["input_ids"].numel() for g in groups))
                losses[k] = float(loss.detach())
            diff = max(diff, abs(losses["padded"] - losses["grouped"]))
        p, g = statistics.median(secs["padded"]), statistics.median(secs["grouped"])
        print(f"{part}: tokens/step padded {statistics.fmean(tokens['padded']):.0f}, grouped "
              f"{statistics.fmean(tokens['grouped']):.0f}; s/step (median of {steps}) padded {p:.3f}, grouped "
              f"{g:.3f}; speed-up {p / g:.2f}x; largest loss difference {diff:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=Path, default=None, help="a built world (default: build mini in a temp folder)")
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()
    if a.world is not None:
        run(a.world, a.steps)
        return
    from sicog.world.build import build_world

    with tempfile.TemporaryDirectory() as tmp:
        build_world(Path(tmp) / "world", "mini", 0)
        run(Path(tmp) / "world", a.steps)


if __name__ == "__main__":
    main()
