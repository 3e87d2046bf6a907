"""Candidates per second: the candidate engine's decoding steps, and the engine against a reference loop.

All three run the same random tiny SICOG model on the same inputs, with the same number of
candidates per input and the same token budget (every candidate is forced to exactly --new-tokens
tokens, so early end tokens cannot favour any side):

- reference: one input and one candidate per `model.generate` call, N calls per input (the image
  is encoded and the prompt prefilled N times, one row decoded at a time);
- engine, generic steps: `--batch-size` inputs per call, one prefill, the KV cache expanded N
  times, B*N rows decoded together, each step through the model's own forward (a 4-D mask built
  and every layer's cache grown by concatenation per step: the engine before `qwen2_steps`);
- engine, buffered steps (what `sicog generate` runs): the same, with the Qwen2 steps written in
  place into preallocated key/value buffers. Its candidates must equal the generic steps' bit for
  bit (checked here; the run stops otherwise).

    python benchmarks/bench_generate.py [--inputs 4] [--num-candidates 6] [--new-tokens 128] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from sicog.generate.engine import CandidateEngine, SamplingSettings
from sicog.model.precision import machine_line
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny-model fixtures
from tiny_models import build_random_tiny  # noqa: E402


def make_items(processor, n: int):
    items = []
    for i in range(n):
        img = Image.new("RGB", (160 + 24 * i, 120 + 16 * i), (30 * i % 255, 140, 210))
        ImageDraw.Draw(img).rectangle([10, 10, 60 + 5 * i, 50], fill=(220, 40, 40))
        conv = [{"from": "human", "value": "<image>\nPlease generate a detailed caption of this image. "
                                           "Describe the image step-by-step."}]
        items.append(processor.encode(conv, image=img, add_generation_prompt=True, for_generation=True))
    return items


def run_reference(model, items, s: SamplingSettings) -> int:
    tokens = 0
    for it in items:
        for k in range(s.num_candidates):
            torch.manual_seed(s.seed + k)
            out = model.generate(input_ids=it["input_ids"][None], attention_mask=torch.ones_like(it["input_ids"])[None],
                                 images=[it["images"]], do_sample=True, temperature=s.temperature, top_p=s.top_p,
                                 max_new_tokens=s.max_new_tokens, min_new_tokens=s.min_new_tokens)
            tokens += out.shape[1] - it["input_ids"].shape[0]
    return tokens


def run_engine(engine: CandidateEngine, items, batch_size: int) -> list:
    """The token ids of every candidate, batch after batch."""
    out = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        out += engine.generate_ids([f"bench{start + i}" for i in range(len(chunk))], chunk)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--inputs", type=int, default=4)
    p.add_argument("--num-candidates", type=int, default=6)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    model, processor = build_random_tiny(seed=args.seed)
    model.eval()
    items = make_items(processor, args.inputs)
    s = SamplingSettings(num_candidates=args.num_candidates, temperature=0.7, top_p=0.9,
                         max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, seed=args.seed)
    generic = CandidateEngine(model, processor, s, generic_steps=True)
    buffered = CandidateEngine(model, processor, s)
    n_cand = args.inputs * args.num_candidates
    expect_tokens = n_cand * args.new_tokens
    times = {"reference": [], "generic": [], "buffered": []}
    with torch.no_grad():
        for engine in (generic, buffered):  # warm-up every path
            run_engine(engine, items[:1], 1)
        run_reference(model, items[:1], SamplingSettings(num_candidates=1, max_new_tokens=2, min_new_tokens=2))
        for _ in range(args.repeats):  # interleaved, so load from other processes hits every side alike
            t0 = time.perf_counter()
            ref_tokens = run_reference(model, items, s)
            times["reference"].append(time.perf_counter() - t0)
            outs = {}
            for name, engine in (("generic", generic), ("buffered", buffered)):
                t0 = time.perf_counter()
                outs[name] = run_engine(engine, items, args.batch_size)
                times[name].append(time.perf_counter() - t0)
            eng_tokens = [sum(len(c) for cands in out for c in cands) for out in outs.values()]
            if ref_tokens != expect_tokens or eng_tokens != [expect_tokens] * 2:
                raise SystemExit(f"unequal work: reference {ref_tokens}, engines {eng_tokens}, "
                                 f"expected {expect_tokens} tokens")
            if outs["generic"] != outs["buffered"]:
                raise SystemExit("the buffered steps gave other candidates than the generic steps")
    med = {k: statistics.median(v) for k, v in times.items()}
    prompt_len = sum(int(it["input_ids"].shape[0]) for it in items) / len(items)
    print(f"torch {torch.__version__}; {machine_line()}")
    print(f"tiny SICOG model, fp32, {args.inputs} inputs x {args.num_candidates} candidates x {args.new_tokens} "
          f"new tokens, mean prompt {prompt_len:.0f} tokens, median of {args.repeats} interleaved repeats")
    names = {"reference": "reference loop (1 input, 1 candidate per generate call)",
             "generic": f"engine, generic steps (batch {args.batch_size}, KV x{args.num_candidates})",
             "buffered": f"engine, buffered Qwen2 steps (batch {args.batch_size}, KV x{args.num_candidates})"}
    for k, name in names.items():
        print(f"{name:<62} {n_cand / med[k]:8.2f} candidates/s  ({expect_tokens / med[k]:8.1f} tokens/s, "
              f"{med[k]:.2f}s)")
    for a, b in (("generic", "buffered"), ("reference", "generic"), ("reference", "buffered")):
        per = ", ".join(f"{x / y:.2f}x" for x, y in zip(times[a], times[b]))
        print(f"{b} vs {a}: {med[a] / med[b]:.2f}x (per repeat: {per})")
    print("buffered and generic steps: the same candidates bit for bit in every repeat")


if __name__ == "__main__":
    main()
