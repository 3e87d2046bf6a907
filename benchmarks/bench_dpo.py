"""DPO step cost with a live frozen reference vs precomputed reference log-probs, side by side.

Same tiny-tier model (reset to the same weights before each run), same preference pairs, the same
number of optimizer steps; only where the reference log-probs come from differs. Prints pairs/s
of the training loop for each, the cost of the one-off precompute pass, and the ratios.

    .venv/bin/python benchmarks/bench_dpo.py [--pairs 16] [--batch-size 4] [--epochs 2] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import copy
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny-model fixtures
from tiny_models import build_random_tiny  # noqa: E402
from sicog.train.dpo import completion_logps, precompute_reference_logps, preference_loss, reference_logps  # noqa: E402
from sicog.train.dpo_data import PreferenceCollator, PreferenceDataset, prepare_pairs  # noqa: E402

SIZES = [(112, 112), (224, 112), (96, 160)]
WORDS = "the red blue green square circle sits left of right above below a small large shape".split()


def make_pairs(root: Path, n: int, seed: int) -> Path:
    import json

    rng = random.Random(seed)
    lines = []
    for i in range(n):
        w, h = rng.choice(SIZES)
        Image.new("RGB", (w, h), (rng.randrange(256), rng.randrange(256), rng.randrange(256))).save(root / f"{i}.png")
        chosen, rejected = (" ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 60))) for _ in range(2))
        lines.append(json.dumps({"id": str(i), "image": f"{i}.png", "prompt": "<image>\nDescribe the image.",
                                 "chosen": chosen, "rejected": rejected}))
    path = root / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def train_loop(model, ref, dataset, collator, batch_size, epochs, device) -> float:
    """Seconds for `epochs` passes of forward, loss, backward and an SGD step."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    model.train()
    order = list(range(len(dataset)))
    start = time.perf_counter()
    for _ in range(epochs):
        for k in range(0, len(order), batch_size):
            batch = collator([dataset[i] for i in order[k:k + batch_size]])
            ids, mask, labels = (batch[x].to(device) for x in ("input_ids", "attention_mask", "labels"))
            logps, counts = completion_logps(model(input_ids=ids, attention_mask=mask, images=batch["images"]).logits,
                                              labels)
            n = logps.shape[0] // 2
            if ref is None:
                r = batch["ref_logps"].to(device)
                ref_c, ref_r = r[:, 0], r[:, 1]
            else:
                r = reference_logps(ref, {"input_ids": ids, "attention_mask": mask, "labels": labels,
                                          "images": batch["images"]})
                ref_c, ref_r = r[:n], r[n:]
            loss = preference_loss(logps, counts, ref_c, ref_r, beta=0.1, sft_weight=1.0)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_pairs(Path(tmp), args.pairs, seed=0)
        base, processor = build_random_tiny(seed=0)
        pairs, _ = prepare_pairs(data, None, processor, 4096, progress=False)
        results = {}
        for mode in ("live", "precomputed"):
            model = copy.deepcopy(base).to(device)
            ref = copy.deepcopy(base).to(device).eval().requires_grad_(False)
            dataset = PreferenceDataset(pairs, processor)
            collator = PreferenceCollator(dataset.processor)
            pre = 0.0
            if mode == "precomputed":
                t0 = time.perf_counter()
                dataset.set_reference_logps(precompute_reference_logps(ref, dataset, collator, args.batch_size, device,
                                                                       progress=False))
                pre = time.perf_counter() - t0
                ref = None
            seconds = train_loop(model, ref, dataset, collator, args.batch_size, args.epochs, device)
            results[mode] = (seconds, pre)
            print(f"{mode:12s} training {args.pairs * args.epochs / seconds:8.2f} pairs/s ({seconds:.2f} s)"
                  f"{f', precompute pass {pre:.2f} s' if pre else ''}")
    live, (pre_train, pre_pass) = results["live"][0], results["precomputed"]
    print(f"ratio live / precomputed training time: {live / pre_train:.2f}x; "
          f"including the precompute pass: {live / (pre_train + pre_pass):.2f}x "
          f"({args.pairs} pairs, batch {args.batch_size}, {args.epochs} epochs, {device})")


if __name__ == "__main__":
    main()
