"""fp32 against bf16 autocast: the same short stage-2 run side by side, then generation, in one process.

Training: a micro world is built in-process (`sicog world build`), a random tiny-tier model is
made with the world's tokenizer and copied; the two copies train stage 2 (what trains and the
per-part learning rates from configs/stages/tiny.yaml) on the same batches of the world's `sft`
records in the same order, one in fp32 and one under bf16 autocast with fp32 master weights (what
`sicog train --precision bf16` does through the Trainer). Steps are interleaved (fp32 step k, bf16
step k, the order swapped every step), so load from other processes hits both alike. A fifth of
the `sft` records (whole scenes) is held out for the final loss.

Generation: the fp32-trained model through the candidate engine in fp32 and in bf16, on the same
held-out prompts, every candidate forced to --new-tokens tokens (equal work), interleaved repeats.

Prints the machine (CPU flags, threads), non-padding tokens/s and steps/s of both, their ratio,
MFU against each precision's measured matmul peak, the two loss curves every --log-every steps,
the final held-out loss of both (each model evaluated in fp32 and in its own precision), and
generation tokens/s of both.

    python benchmarks/bench_precision.py [--steps 60] [--batch-size 8] [--log-every 5] [--new-tokens 24]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sicog.data.collator import TrainCollator  # noqa: E402
from sicog.data.dataset import SupervisedDataset, prepare_samples  # noqa: E402
from sicog.data.mixture import load_data  # noqa: E402
from sicog.data.sampler import ModalityLengthGroupedSampler  # noqa: E402
from sicog.generate.engine import CandidateEngine, SamplingSettings  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny-model fixtures
from tiny_models import build_random_tiny  # noqa: E402
from sicog.model.precision import autocast, machine_line  # noqa: E402
from sicog.train.config import load_profile  # noqa: E402
from sicog.train.flops import llm_shape, measure_matmul_peak, mfu, training_flops_per_token  # noqa: E402
from sicog.train.stages import freeze, part_params  # noqa: E402
from sicog.world.build import build_world  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def optimizer_for(model, stage_settings: dict) -> torch.optim.Optimizer:
    """AdamW with the stage's learning rate and the vision tower at its own (as SicogTrainer groups them)."""
    lr = float(stage_settings["learning_rate"])
    tower_lr = float(stage_settings.get("mm_vision_tower_lr") or lr)
    tower = {id(p) for p in part_params(model)["vision_tower"]}
    groups = {lr: [], tower_lr: []}
    for p in model.parameters():
        if p.requires_grad:
            groups[tower_lr if id(p) in tower else lr].append(p)
    return torch.optim.AdamW([{"params": ps, "lr": r} for r, ps in groups.items() if ps], weight_decay=0.0)


def step(model, opt, batch, precision: str) -> tuple[float, float]:
    """One optimizer step; (loss, seconds). Autocast around the forward only, as accelerate applies it."""
    t0 = time.perf_counter()
    with autocast(precision, "cpu"):
        loss = model(**batch).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item(), time.perf_counter() - t0


@torch.no_grad()
def held_out_loss(model, batches, precision: str) -> float:
    """Token-weighted mean loss over the held-out batches (training-mode forward: the loss alone)."""
    total, count = 0.0, 0
    for batch in batches:
        n = int((batch["labels"][:, 1:] != -100).sum())
        with autocast(precision, "cpu"):
            total += model(**batch).loss.item() * n
        count += n
    return total / count


def generation_tokens_per_s(model, processor, items, args) -> dict[str, float]:
    s = SamplingSettings(num_candidates=args.num_candidates, temperature=0.7, top_p=0.9,
                         max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, seed=args.seed)
    engines = {p: CandidateEngine(model, processor, s, precision=p) for p in PRECISIONS}
    ids = [f"held{i}" for i in range(len(items))]
    times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    outputs = {}
    for p in PRECISIONS:  # warm-up
        engines[p].generate_ids(ids[:1], items[:1])
    for r in range(args.repeats):
        for p in (PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]):
            t0 = time.perf_counter()
            outputs[p] = engines[p].generate_ids(ids, items)
            times[p].append(time.perf_counter() - t0)
    tokens = {p: sum(len(c) for cands in outputs[p] for c in cands) for p in PRECISIONS}
    if len(set(tokens.values())) != 1:
        raise SystemExit(f"unequal generation work: {tokens}")
    same = sum(a == b for ca, cb in zip(outputs["fp32"], outputs["bf16"]) for a, b in zip(ca, cb))
    n = sum(len(c) for c in outputs["fp32"])
    return {**{p: tokens[p] / statistics.median(times[p]) for p in PRECISIONS}, "identical": same / n,
            "tokens": tokens["fp32"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps of each run")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--held-out", type=float, default=0.2, help="fraction of the sft records held out")
    ap.add_argument("--gen-inputs", type=int, default=4)
    ap.add_argument("--num-candidates", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from transformers import AutoTokenizer

    print(f"torch {torch.__version__}; {machine_line()}")
    stage = load_profile("tiny", "stage2")
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        build_world(world, "micro", seed=args.seed)
        tokenizer = AutoTokenizer.from_pretrained(world / "tokenizer")
        base, processor = build_random_tiny(seed=args.seed, tokenizer=tokenizer)
        entries = load_data(world / "data" / "sft.jsonl", world, seed=args.seed)
        samples = prepare_samples(entries, processor, int(stage["model_max_length"]), progress=False)
        cut = max(1, int(round(len(samples) * (1 - args.held_out))))
        train_set = SupervisedDataset(samples[:cut], processor)
        held_set = SupervisedDataset(samples[cut:], processor)
        collate = TrainCollator(processor)
        sampler = ModalityLengthGroupedSampler(train_set.lengths, train_set.has_image, args.batch_size, seed=args.seed)
        order: list[list[int]] = []
        epoch = 0
        while len(order) < args.steps:
            sampler.set_epoch(epoch)
            order.extend(list(sampler))
            epoch += 1
        batches = [collate([train_set[i] for i in ids]) for ids in order[:args.steps]]
        held = [collate([held_set[i] for i in range(k, min(k + args.batch_size, len(held_set)))])
                for k in range(0, len(held_set), args.batch_size)]
        gen_items = [processor.encode([{"from": "human", "value": r.record["conversations"][0]["value"]}],
                                      image=processor.load_image(world / r.record["image"]),
                                      add_generation_prompt=True, for_generation=True)
                     for r in entries[cut:] if r.record.get("image")][:args.gen_inputs]

    freeze(base, "stage2")
    base.train()
    models = {"fp32": base, "bf16": copy.deepcopy(base)}
    opts = {p: optimizer_for(m, stage) for p, m in models.items()}
    losses: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    seconds = {p: 0.0 for p in PRECISIONS}
    tokens = 0
    for k, batch in enumerate(batches):
        for p in (PRECISIONS if k % 2 == 0 else PRECISIONS[::-1]):
            loss, dt = step(models[p], opts[p], batch, p)
            losses[p].append(loss)
            if k > 0:  # step 0 is the warm-up (allocations, kernel selection): not timed
                seconds[p] += dt
        if k > 0:
            tokens += int(batch["attention_mask"].sum())

    peaks = {"fp32": measure_matmul_peak("cpu", torch.float32), "bf16": measure_matmul_peak("cpu", torch.bfloat16)}
    n_params, n_layers, hidden = llm_shape(base.language_model)
    lengths = train_set.lengths
    fpt = training_flops_per_token(n_params, n_layers, hidden, sum(x * x for x in lengths) / sum(lengths))
    print(f"stage 2 on a micro world: {len(train_set)} training records ({sum(train_set.has_image)} with images), "
          f"{len(held_set)} held out; batch {args.batch_size}, {args.steps} steps each "
          f"(lr {stage['learning_rate']}, vision tower {stage.get('mm_vision_tower_lr')}); "
          f"steps interleaved, the first one untimed")
    print(f"matmul peak (measured): fp32 {peaks['fp32'] / 1e12:.3f} TFLOP/s, bf16 {peaks['bf16'] / 1e12:.3f} TFLOP/s "
          f"({peaks['bf16'] / peaks['fp32']:.2f}x)")
    tps = {p: tokens / seconds[p] for p in PRECISIONS}
    for p in PRECISIONS:
        print(f"{p}: {tps[p]:9.1f} non-pad tokens/s  {(args.steps - 1) / seconds[p]:6.3f} steps/s  "
              f"MFU {mfu(tps[p], fpt, peaks[p]):6.2%} of its own peak")
    print(f"speed ratio bf16 / fp32: {tps['bf16'] / tps['fp32']:.2f}x")
    print(f"\n{'step':>5} {'loss fp32':>10} {'loss bf16':>10} {'diff':>8}")
    marks = sorted({*range(0, args.steps, args.log_every), args.steps - 1})
    for k in marks:
        a, b = losses["fp32"][k], losses["bf16"][k]
        print(f"{k + 1:5d} {a:10.4f} {b:10.4f} {b - a:+8.4f}")
    tail = max(1, args.log_every)
    mean_a = statistics.mean(losses["fp32"][-tail:])
    mean_b = statistics.mean(losses["bf16"][-tail:])
    print(f"mean training loss of the last {tail} steps: fp32 {mean_a:.4f}, bf16 {mean_b:.4f} "
          f"({100 * (mean_b - mean_a) / mean_a:+.2f}%)")
    h = {p: held_out_loss(models[p], held, "fp32") for p in PRECISIONS}
    h_own = held_out_loss(models["bf16"], held, "bf16")
    print(f"held-out loss ({len(held_set)} records, evaluated in fp32): fp32-trained {h['fp32']:.4f}, "
          f"bf16-trained {h['bf16']:.4f} ({100 * (h['bf16'] - h['fp32']) / h['fp32']:+.2f}%); "
          f"bf16-trained evaluated under bf16: {h_own:.4f}")

    models["fp32"].eval()
    g = generation_tokens_per_s(models["fp32"], processor, gen_items, args)
    print(f"\ngeneration (fp32-trained model, {len(gen_items)} held-out prompts x {args.num_candidates} candidates x "
          f"{args.new_tokens} tokens, median of {args.repeats} interleaved repeats): fp32 {g['fp32']:.1f} tokens/s, "
          f"bf16 {g['bf16']:.1f} tokens/s, ratio {g['bf16'] / g['fp32']:.2f}x; "
          f"candidates identical in both: {100 * g['identical']:.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
