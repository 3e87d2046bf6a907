"""Training throughput with and without modality-length grouping, side by side in one run.

Same tiny-tier model (reset to the same weights), same records, one full epoch each; only the
batching differs: the modality-length grouped sampler vs plain shuffled batches (what
`--group-by-modality-length false` gives). Prints the padding fraction of each, non-pad tokens/s,
and MFU against this machine's matmul peak measured in the same run.

    .venv/bin/python benchmarks/bench_train.py [--records 96] [--batch-size 8] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sicog.data.collator import TrainCollator  # noqa: E402
from sicog.data.dataset import SupervisedDataset, prepare_samples  # noqa: E402
from sicog.data.mixture import DataEntry  # noqa: E402
from sicog.data.sampler import ModalityLengthGroupedSampler, padding_fraction  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny-model fixtures
from tiny_models import build_random_tiny  # noqa: E402
from sicog.train.flops import llm_shape, measure_matmul_peak, mfu, training_flops_per_token  # noqa: E402

SIZES = [(112, 112), (224, 112), (96, 160), (300, 200), (448, 112)]
WORDS = "the red blue green square circle sits left of right above below a small large shape".split()


def make_records(root: Path, n: int, seed: int) -> list[DataEntry]:
    """Image records of varied sizes (hence token counts) and text-only records of varied lengths."""
    rng = random.Random(seed)
    entries = []
    for i in range(n):
        answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 120)))
        if rng.random() < 0.6:
            w, h = rng.choice(SIZES)
            Image.new("RGB", (w, h), (rng.randrange(256), rng.randrange(256), rng.randrange(256))).save(root / f"{i}.png")
            rec = {"id": str(i), "image": f"{i}.png", "conversations": [
                {"from": "human", "value": "<image>\nDescribe the image."}, {"from": "gpt", "value": answer}]}
        else:
            rec = {"id": str(i), "conversations": [
                {"from": "human", "value": "Tell me about shapes."}, {"from": "gpt", "value": answer}]}
        entries.append(DataEntry(rec, root, "bench", i))
    return entries


def train_epoch(model, state, dataset, batches, collate, device) -> tuple[int, float]:
    """One pass over all `batches` from the same starting weights; (non-pad tokens, seconds)."""
    model.train()
    tokens, elapsed = 0, 0.0
    for k, batch_ids in enumerate([batches[0], *batches]):
        if k <= 1:  # batch 0 once untimed (warm-up), then restart from the same weights
            model.load_state_dict(state)
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        batch = collate([dataset[i] for i in batch_ids])
        inputs = {key: (v.to(device) if torch.is_tensor(v) else [im.to(device) if im is not None else None for im in v])
                  for key, v in batch.items()}
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(**inputs).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if k > 0:
            elapsed += time.perf_counter() - t0
            tokens += int(batch["attention_mask"].sum())
    return tokens, elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(args.seed)

    model, processor = build_random_tiny(seed=args.seed)
    model.to(device)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        samples = prepare_samples(make_records(Path(tmp), args.records, args.seed), processor, 4096, progress=False)
        dataset = SupervisedDataset(samples, processor)
        lengths = dataset.lengths
        grouped = list(ModalityLengthGroupedSampler(lengths, dataset.has_image, args.batch_size, seed=args.seed))
        order = list(range(len(dataset)))
        random.Random(args.seed).shuffle(order)
        plain = [order[i:i + args.batch_size] for i in range(0, len(order), args.batch_size)]
        collate = TrainCollator(processor)

        peak = measure_matmul_peak(device, torch.float32)
        n_params, n_layers, hidden = llm_shape(model.language_model)
        fpt = training_flops_per_token(n_params, n_layers, hidden, sum(x * x for x in lengths) / sum(lengths))
        results = {}
        for name, batches in (("grouped", grouped), ("random", plain)):
            tokens, elapsed = train_epoch(model, state, dataset, batches, collate, device)
            tps = tokens / elapsed
            results[name] = (padding_fraction(batches, lengths), tps, mfu(tps, fpt, peak))

    print(f"device {device}, {len(dataset)} records ({sum(dataset.has_image)} with images), "
          f"batch {args.batch_size}, one timed epoch each ({len(grouped)} grouped / {len(plain)} random batches)")
    print(f"matmul peak (fp32, measured): {peak / 1e12:.3f} TFLOP/s")
    for name, (pad, tps, m) in results.items():
        print(f"{name:8s} padding fraction {pad:6.3f}   non-pad tokens/s {tps:10.1f}   MFU {m:6.2%}")
    g, r = results["grouped"], results["random"]
    print(f"padding fraction ratio (random / grouped): {r[0] / max(g[0], 1e-9):.2f}x")
    print(f"tokens/s ratio (grouped / random): {g[1] / r[1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
