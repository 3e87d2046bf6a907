"""Curation throughput: candidates per second of encode + score, three ways side by side.

All paths score the same synthetic candidate file (INPUTS inputs x N CoD captions whose step 5
holds ~WORDS words) with the same encoder weights (default: the packaged all-MiniLM-L6-v2):

- curation at `--precision` (default auto: bf16 autocast where the CPU has native bf16, as
  `sicog curate` runs by default): `sicog.curate.select.score_inputs` - the compared parts of a
  chunk of inputs deduplicated and encoded in large batches, scores as one batched matmul;
- the same in fp32 (the path before the precision setting, and the reference scores);
- naive: one fp32 encoder call per input (its N texts) and the pairwise cosines in Python loops,
  as a straightforward script would do it (timed on a prefix of the inputs).

The two curation paths are timed in alternating chunks so that load on the machine hits both.
Prints the rates, the ratios, the largest score difference from fp32 and how many inputs keep
fp32's choice, with the CPU flags and the thread count.

    python benchmarks/bench_curate.py [--inputs 2000] [--candidates 6] [--words 100] [--naive-inputs 500]
"""
from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path

import torch

from sicog.curate.candidates import load_candidates
from sicog.curate.embed import load_encoder
from sicog.curate.select import score_inputs
from sicog.data.formats import CAPTION_PROMPTS, COD_HEADINGS, format_steps
from sicog.model.precision import PRECISIONS, machine_line

SHAPES = ["cube", "ball", "cone", "cylinder", "pyramid", "ring", "star", "triangle", "square", "disc"]
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black", "grey", "pink"]
SIZES = ["small", "large", "tiny", "medium-sized", "huge"]
PLACES = ["to the left of", "to the right of", "above", "below", "next to", "behind", "in front of"]
FILLER = ["The background is plain and evenly lit.", "Soft shadows fall to the lower right.",
          "A printed letter is visible on one face.", "The scene is viewed from slightly above.",
          "Nothing else appears near the edges of the image.", "The objects do not overlap."]


def description(rng: random.Random, words: int) -> str:
    sentences = []
    while sum(len(s.split()) for s in sentences) < words:
        if rng.random() < 0.7:
            sentences.append(f"A {rng.choice(SIZES)} {rng.choice(COLOURS)} {rng.choice(SHAPES)} is "
                             f"{rng.choice(PLACES)} a {rng.choice(SIZES)} {rng.choice(COLOURS)} {rng.choice(SHAPES)}.")
        else:
            sentences.append(rng.choice(FILLER))
    return " ".join(sentences)


def write_candidates(path: Path, inputs: int, n: int, words: int, seed: int) -> None:
    rng = random.Random(seed)
    generation = {"task": "caption", "prompt_name": "cod-default", "model": "bench", "temperature": 0.7,
                  "top_p": 0.9, "num_beams": 1, "max_new_tokens": 1200, "seed": seed, "augment": None}
    with path.open("w", encoding="utf-8") as f:
        for i in range(inputs):
            cands = [format_steps(COD_HEADINGS, ["Several shapes.", "Colours and sizes.", "Their layout.",
                                                 "The margins.", description(rng, words)]) for _ in range(n)]
            f.write(json.dumps({"id": f"bench{i}", "image": f"{i}.png", "prompt": "<image>\n" + CAPTION_PROMPTS["cod-default"],
                                "candidates": cands, "generation": generation}) + "\n")


def naive_scores(encoder, items) -> list[list[float]]:
    out = []
    for item in items:
        vectors = encoder.model.encode(item.compared_parts(), convert_to_tensor=False, show_progress_bar=False).tolist()
        unit = [[x / math.sqrt(sum(y * y for y in v)) for x in v] for v in vectors]
        out.append([sum(sum(a * b for a, b in zip(u, w)) for w in unit) / len(unit) for u in unit])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", type=int, default=2000)
    p.add_argument("--candidates", type=int, default=6)
    p.add_argument("--words", type=int, default=100)
    p.add_argument("--naive-inputs", type=int, default=500, help="inputs timed with the naive loop (a prefix)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--chunk-size", type=int, default=512)
    p.add_argument("--encoder", default=None)
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="the fast path's compute precision")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "candidates.jsonl"
        write_candidates(path, args.inputs, args.candidates, args.words, args.seed)
        items, rejects, _ = load_candidates(path)
    assert not rejects and len(items) == args.inputs
    fast = load_encoder(args.encoder, args.device, precision=args.precision)
    full = load_encoder(args.encoder, args.device, precision="fp32")
    for encoder in (fast, full):
        encoder.encode(["warm up"] * 8)

    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    seconds = {"fast": 0.0, "fp32": 0.0}
    results: dict[str, list[dict]] = {"fast": [], "fp32": []}
    for start in range(0, len(items), args.chunk_size):
        chunk = items[start:start + args.chunk_size]
        order = [("fast", fast), ("fp32", full)] if (start // args.chunk_size) % 2 == 0 else [("fp32", full), ("fast", fast)]
        for name, encoder in order:
            t0 = time.perf_counter()
            results[name] += score_inputs(chunk, "embedding", encoder, args.batch_size)
            sync()
            seconds[name] += time.perf_counter() - t0
    n = len(items) * args.candidates
    rate = {name: n / s for name, s in seconds.items()}

    subset = items[: min(args.naive_inputs, len(items))]
    t0 = time.perf_counter()
    slow = naive_scores(full, subset)
    sync()
    naive_rate = len(subset) * args.candidates / (time.perf_counter() - t0)

    def agreement(results_a: list[dict], scores_b: list[list[float]]) -> tuple[float, int]:
        diff = max(abs(a - b) for r, s in zip(results_a, scores_b) for a, b in zip(r["scores"], s))
        same = sum(r["argmax"] == max(range(len(s)), key=lambda i: (s[i], -i)) for r, s in zip(results_a, scores_b))
        return diff, same

    fp32_scores = [r["scores"] for r in results["fp32"]]
    fast_diff, fast_same = agreement(results["fast"], fp32_scores)
    naive_diff, naive_same = agreement(results["fp32"], slow)
    tokens = sum(len(full.model.tokenizer(t)["input_ids"]) for t in items[0].compared_parts())
    print(f"device={args.device} {machine_line()} encoder={args.encoder or 'packaged all-MiniLM-L6-v2'}")
    print(f"inputs={args.inputs} candidates/input={args.candidates} words/candidate~{args.words} "
          f"(~{tokens // args.candidates} tokens compared per candidate)")
    print(f"curation {fast.precision:<5}: {n} candidates in {seconds['fast']:.2f}s = {rate['fast']:.1f} candidates/s")
    print(f"curation fp32 : {n} candidates in {seconds['fp32']:.2f}s = {rate['fp32']:.1f} candidates/s")
    print(f"naive loop    : {len(subset) * args.candidates} candidates = {naive_rate:.1f} candidates/s")
    print(f"speed-up      : {fast.precision} vs fp32 curation {rate['fast'] / rate['fp32']:.2f}x; "
          f"vs naive {rate['fast'] / naive_rate:.2f}x; fp32 curation vs naive {rate['fp32'] / naive_rate:.2f}x")
    print(f"agreement     : {fast.precision} vs fp32: max |score difference| {fast_diff:.2e}, same argmax on "
          f"{fast_same}/{len(items)} inputs; fp32 curation vs naive: {naive_diff:.2e}, {naive_same}/{len(subset)}")


if __name__ == "__main__":
    main()
