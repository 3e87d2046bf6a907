"""Candidates per second: the candidate engine against a reference-style generation loop.

Both run the same random tiny SICOG model on the same inputs, with the same number of candidates
per input and the same token budget (every candidate is forced to exactly --new-tokens tokens, so
early end tokens cannot favour either side):

- reference: one input and one candidate per `model.generate` call, N calls per input (the image
  is encoded and the prompt prefilled N times, one row decoded at a time);
- engine: `--batch-size` inputs per call, one prefill, the KV cache expanded N times, B*N rows
  decoded together.

    python benchmarks/bench_generate.py [--inputs 4] [--num-candidates 6] [--new-tokens 32] [--repeats 3]
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


def run_engine(engine: CandidateEngine, items, batch_size: int) -> int:
    tokens = 0
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        out = engine.generate_ids([f"bench{start + i}" for i in range(len(chunk))], chunk)
        tokens += sum(len(c) for cands in out for c in cands)
    return tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--inputs", type=int, default=4)
    p.add_argument("--num-candidates", type=int, default=6)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    model, processor = build_random_tiny(seed=args.seed)
    model.eval()
    items = make_items(processor, args.inputs)
    s = SamplingSettings(num_candidates=args.num_candidates, temperature=0.7, top_p=0.9,
                         max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, seed=args.seed)
    engine = CandidateEngine(model, processor, s)
    n_cand = args.inputs * args.num_candidates
    expect_tokens = n_cand * args.new_tokens
    with torch.no_grad():
        run_engine(engine, items[:1], 1)  # warm-up both paths
        run_reference(model, items[:1], SamplingSettings(num_candidates=1, max_new_tokens=2, min_new_tokens=2))
        t_refs, t_engs = [], []
        for _ in range(args.repeats):  # interleaved, so load from other processes hits both sides alike
            t0 = time.perf_counter()
            ref_tokens = run_reference(model, items, s)
            t_refs.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            eng_tokens = run_engine(engine, items, args.batch_size)
            t_engs.append(time.perf_counter() - t0)
            if ref_tokens != expect_tokens or eng_tokens != expect_tokens:
                raise SystemExit(f"unequal work: reference {ref_tokens}, engine {eng_tokens}, "
                                 f"expected {expect_tokens} tokens")
    t_ref, t_eng = statistics.median(t_refs), statistics.median(t_engs)
    prompt_len = sum(int(it["input_ids"].shape[0]) for it in items) / len(items)
    print(f"tiny SICOG model, {args.inputs} inputs x {args.num_candidates} candidates x {args.new_tokens} new tokens, "
          f"mean prompt {prompt_len:.0f} tokens, torch threads {torch.get_num_threads()}, "
          f"median of {args.repeats} interleaved repeats")
    print(f"reference loop (1 input, 1 candidate per generate call): {n_cand / t_ref:8.2f} candidates/s  "
          f"({expect_tokens / t_ref:8.1f} tokens/s, {t_ref:.2f}s)")
    engine_name = f"engine (batch {args.batch_size}, prefill once, KV x{args.num_candidates}):"
    print(f"{engine_name:<56} {n_cand / t_eng:8.2f} candidates/s  "
          f"({expect_tokens / t_eng:8.1f} tokens/s, {t_eng:.2f}s)")
    ratios = ", ".join(f"{r / e:.1f}x" for r, e in zip(t_refs, t_engs))
    print(f"speed-up: {t_ref / t_eng:.2f}x (per repeat: {ratios})")


if __name__ == "__main__":
    main()
