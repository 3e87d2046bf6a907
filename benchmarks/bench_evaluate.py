"""Evaluation throughput: `sicog evaluate`'s left-padded batches against one record per generate call.

Both runs evaluate the same --records QA records of a micro world with the same random tiny model
and the pinned v1 settings except the batch size:

- batched: the evaluation runner with --batch records per `generate` call (left padding);
- per-record: the same runner with batch size 1, as a reference-style loop generates.

Prints records/s and new tokens/s of both, their ratio, and whether the predictions are identical
(greedy decoding must not depend on the batch).

    python benchmarks/bench_evaluate.py [--records 48] [--batch 8] [--max-new-tokens 16]
"""
from __future__ import annotations

import argparse
import sys
import dataclasses
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from sicog.evaluate.runner import evaluate
from sicog.evaluate.settings import load_eval_config
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny-model fixtures
from tiny_models import build_random_tiny  # noqa: E402
from sicog.world.build import build_world


def run(world: Path, out: Path, cfg, records: int) -> tuple[float, float, list[str]]:
    model, processor = build_random_tiny(seed=0)
    start = time.perf_counter()
    result = evaluate(model, processor, world, out, cfg, benchmarks=("qa",), limit=records, device="cpu")
    seconds = time.perf_counter() - start
    preds = [json.loads(x)["prediction"] for x in (out / "predictions" / "qa.jsonl").read_text().splitlines()]
    return result["benchmarks"]["qa"]["evaluated"] / seconds, result["new_tokens_per_second"], preds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    base = load_eval_config("v1")
    tokens = {**base.max_new_tokens, "qa": args.max_new_tokens}
    batched_cfg = dataclasses.replace(base, batch_size=args.batch, max_new_tokens=tokens)
    single_cfg = dataclasses.replace(base, batch_size=1, max_new_tokens=tokens)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_world(tmp / "world", "micro", seed=0)
        rb, tb, pb = run(tmp / "world", tmp / "batched", batched_cfg, args.records)
        rs, ts, ps = run(tmp / "world", tmp / "single", single_cfg, args.records)
    print(f"batched (batch {args.batch}): {rb:.2f} records/s, {tb:.1f} new tokens/s")
    print(f"per-record (batch 1):  {rs:.2f} records/s, {ts:.1f} new tokens/s")
    print(f"ratio batched / per-record: {rb / rs:.2f}x; identical predictions: {pb == ps}")


if __name__ == "__main__":
    main()
