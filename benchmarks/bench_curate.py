"""Curation throughput: candidates per second of encode + score, against a naive loop.

Both paths score the same synthetic candidate file (INPUTS inputs x N CoD captions whose step 5
holds ~WORDS words) with the same encoder (default: the packaged all-MiniLM-L6-v2):

- curation: `sicog.curate.select.score_inputs` as `sicog curate` runs it - the compared parts of a
  chunk of inputs deduplicated and encoded in large batches, scores as one batched matmul;
- naive: one encoder call per input (its N texts) and the pairwise cosines in Python loops, as a
  straightforward script would do it.

Prints both rates, the ratio and the largest score difference (they must agree).

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
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "candidates.jsonl"
        write_candidates(path, args.inputs, args.candidates, args.words, args.seed)
        items, rejects, _ = load_candidates(path)
    assert not rejects and len(items) == args.inputs
    encoder = load_encoder(args.encoder, args.device)
    encoder.encode(["warm up"] * 8)

    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    t0 = time.perf_counter()
    results = []
    for start in range(0, len(items), args.chunk_size):
        results += score_inputs(items[start:start + args.chunk_size], "embedding", encoder, args.batch_size)
    sync()
    fast_s = time.perf_counter() - t0
    fast_rate = len(items) * args.candidates / fast_s

    subset = items[: min(args.naive_inputs, len(items))]
    t0 = time.perf_counter()
    slow = naive_scores(encoder, subset)
    sync()
    naive_s = time.perf_counter() - t0
    naive_rate = len(subset) * args.candidates / naive_s

    diff = max(abs(a - b) for r, s in zip(results, slow) for a, b in zip(r["scores"], s))
    same_argmax = sum(r["argmax"] == max(range(len(s)), key=lambda i: (s[i], -i)) for r, s in zip(results, slow))
    tokens = sum(len(encoder.model.tokenizer(t)["input_ids"]) for t in items[0].compared_parts())
    print(f"device={args.device} threads={torch.get_num_threads()} encoder={args.encoder or 'packaged all-MiniLM-L6-v2'}")
    print(f"inputs={args.inputs} candidates/input={args.candidates} words/candidate~{args.words} "
          f"(~{tokens // args.candidates} tokens compared per candidate)")
    print(f"curation : {len(items) * args.candidates} candidates in {fast_s:.2f}s = {fast_rate:.1f} candidates/s")
    print(f"naive    : {len(subset) * args.candidates} candidates in {naive_s:.2f}s = {naive_rate:.1f} candidates/s")
    print(f"speed-up : {fast_rate / naive_rate:.2f}x")
    print(f"agreement: max |score difference| {diff:.2e}; same argmax on {same_argmax}/{len(subset)} inputs")


if __name__ == "__main__":
    main()
