"""Does the model read the image? The vision tower's learning rate, side by side.

From a reproduction run folder (its world, fresh model and stage-1 projector), two copies of the
model are trained for STEPS steps on a question only the image answers - "What is the background
colour?", built from the world's scene graphs of the `align` and `sft` images, the first HELD
images held out:

- whole model at LR (every part at the same learning rate);
- vision tower at VT_LR, the rest at LR (what `mm_vision_tower_lr` does in `sicog train`).

Prints held-out accuracy with each image's own pixels and with shuffled images (chance: one in the
number of background colours). The tiny profile's `mm_vision_tower_lr` was chosen from this probe.

    python benchmarks/probe_vision_lr.py --run runs/mini3 [--steps 200] [--lr 1e-3] [--vt-lr 2e-5]
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch

from sicog.model import SicogForConditionalGeneration, SicogProcessor
from sicog.train.artefacts import load_projector_artefact
from sicog.train.stages import part_params

QUESTION = "<image>\nWhat is the background colour? Answer the question using a single word or phrase."


def background_records(world: Path) -> list[dict]:
    out = []
    for split in ("align", "sft"):
        for line in (world / "data" / f"{split}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            if rec.get("image"):
                scene = json.loads((world / rec["image"]).with_suffix(".json").read_text())
                out.append({"image": rec["image"], "answer": scene["background"]})
    return out


def load_model(run: Path, seed: int):
    model = SicogForConditionalGeneration.from_pretrained(run / "base" / "model")
    load_projector_artefact(model, run / "stage1" / f"s{seed}" / "model")
    return model, SicogProcessor.from_pretrained(run / "base" / "model")


def accuracy(model, proc, world: Path, held: list[dict], answers: list[str], shift: int) -> float:
    """Held-out accuracy of the first answer token among the answers' first tokens; `shift` rotates the images."""
    first = [proc.tokenizer.encode(a, add_special_tokens=False)[0] for a in answers]
    model.eval()
    hits = 0
    with torch.no_grad():
        for i in range(0, len(held), 50):
            chunk = held[i:i + 50]
            items = [proc.encode([{"from": "human", "value": QUESTION}],
                                 image=world / held[(i + j + shift) % len(held)]["image"], add_generation_prompt=True)
                     for j in range(len(chunk))]
            batch = proc.collate(items, padding_side="left")
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           images=batch["images"]).logits[:, -1, first]
            hits += sum(answers[k] == r["answer"] for k, r in zip(logits.argmax(-1).tolist(), chunk))
    model.train()
    return hits / len(held)


def train(run: Path, seed: int, train_set: list[dict], steps: int, lr: float, vt_lr: float, batch: int):
    model, proc = load_model(run, seed)
    world = run / "world"
    tower = {id(p) for p in part_params(model)["vision_tower"]}
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if id(p) not in tower], "lr": lr},
                             {"params": [p for p in params if id(p) in tower], "lr": vt_lr}], weight_decay=0.0)
    base = [g["lr"] for g in opt.param_groups]
    rng = random.Random(seed)
    model.train()
    started = time.perf_counter()
    for step in range(steps):
        scale = min(1.0, (step + 1) / 10) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for g, b in zip(opt.param_groups, base):
            g["lr"] = b * scale
        recs = rng.sample(train_set, batch)
        items = [proc.encode([{"from": "human", "value": QUESTION}, {"from": "gpt", "value": r["answer"]}],
                             image=world / r["image"]) for r in recs]
        b = proc.collate(items)
        loss = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], images=b["images"],
                     labels=b["labels"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model, proc, time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a `sicog reproduce` folder with stage1/s<seed>")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--held", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--vt-lr", type=float, default=2e-5)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    records = background_records(args.run / "world")
    held, train_set = records[:args.held], records[args.held:]
    answers = sorted({r["answer"] for r in records})
    print(f"{len(train_set)} training and {len(held)} held-out images; answers {answers} (chance {1 / len(answers):.2f})")
    results = {}
    for name, vt_lr in (("whole model at lr", args.lr), ("vision tower at vt-lr", args.vt_lr)):
        model, proc, secs = train(args.run, args.seed, train_set, args.steps, args.lr, vt_lr, args.batch)
        own = accuracy(model, proc, args.run / "world", held, answers, 0)
        shuffled = accuracy(model, proc, args.run / "world", held, answers, len(held) // 2)
        results[name] = own
        print(f"{name:24s} (tower lr {vt_lr:g}): held-out accuracy {own:.3f} own images, {shuffled:.3f} shuffled "
              f"({args.steps} steps, {secs:.0f} s)")
    a, b = results.values()
    print(f"accuracy ratio, tower at vt-lr / whole model at lr: {b / max(a, 1e-9):.2f}x")


if __name__ == "__main__":
    main()
