"""Answer reading (`sicog probe`'s second measurement): the teacher-forced answer of every QA and
POPE record of a split (the evaluation prompt, the gold answer's tokens), once with the record's own
image and once with another record's image (the derangement of `sicog evaluate --images shuffled`).
Per skill: the mean answer-token loss and the accuracy (every answer token is the model's argmax). A
model that ignores its images scores the same both ways.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sicog.data.records import read_records
from sicog.evaluate.prompts import eval_prompt
from sicog.evaluate.runner import benchmark_file, shuffled_images
from sicog.evaluate.settings import load_eval_config

IGNORE = -100


def answer_items(processor, world: Path, split: str, cfg, limit: int | None, shuffled: bool) -> list[dict]:
    """Encoded (prompt + gold answer) items of the QA and POPE benchmarks, labels on the answer only."""
    from sicog.evaluate.generation import with_long_side

    proc = with_long_side(processor, cfg.long_side)
    items = []
    for bench in ("qa", "pope"):
        path = benchmark_file(world, split, bench)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: --world must be a built world")
        records = [r for r in read_records(path) if r.get("image") and r.get("answer") is not None]
        image_map = shuffled_images([(r["id"], r) for r in records]) if shuffled else None
        for rec in records[:limit] if limit else records:
            prompt = eval_prompt(rec, bench, cfg)
            image = proc.load_image(world / (image_map[rec["image"]] if image_map else rec["image"]))
            enc = proc.encode([{"from": "human", "value": prompt}], image=image, add_generation_prompt=True,
                              for_generation=True)
            answer = torch.tensor(proc.tokenizer.encode(str(rec["answer"]), add_special_tokens=False), dtype=torch.long)
            items.append({"input_ids": torch.cat([enc["input_ids"], answer]),
                          "labels": torch.cat([torch.full_like(enc["input_ids"], IGNORE), answer]),
                          "images": enc["images"], "skill": rec.get("skill", bench), "id": rec["id"]})
    return items


@torch.inference_mode()
def score_answers(model, processor, items: list[dict], batch_size: int, device) -> dict:
    """Per skill and overall: mean answer-token loss and teacher-forced accuracy."""
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])   # loss sum, correct, records
    for start in tqdm(range(0, len(items), batch_size), desc="probe answers", unit="batch"):
        chunk = items[start:start + batch_size]
        batch = processor.collate([{k: it[k] for k in ("input_ids", "labels", "images")} for it in chunk])
        images = [im.to(device) if im is not None else None for im in batch["images"]]
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                       images=images).logits.float().cpu()
        labels = batch["labels"][:, 1:]
        logits = logits[:, :-1]
        mask = labels != IGNORE
        nll = F.cross_entropy(logits.transpose(1, 2), labels.clamp_min(0), reduction="none") * mask
        hit = (logits.argmax(-1) == labels) | ~mask
        for i, it in enumerate(chunk):
            for key in (it["skill"], "overall"):
                s = sums[key]
                s[0] += float(nll[i].sum() / mask[i].sum())
                s[1] += float(hit[i].all())
                s[2] += 1
    return {k: {"loss": v[0] / v[2], "accuracy": v[1] / v[2], "n": v[2]} for k, v in sorted(sums.items())}


def run_answers(model, processor, world: Path, split: str, eval_config: str, limit: int | None,
                batch_size: int = 16, device="cpu") -> dict:
    cfg = load_eval_config(eval_config)
    out = {"split": split, "eval_config": cfg.version}
    for mode in ("own", "shuffled"):
        items = answer_items(processor, world, split, cfg, limit, shuffled=mode == "shuffled")
        out[mode] = score_answers(model, processor, items, batch_size, device)
    out["gap"] = {k: {"accuracy": out["own"][k]["accuracy"] - out["shuffled"][k]["accuracy"],
                      "loss": out["shuffled"][k]["loss"] - out["own"][k]["loss"]} for k in out["own"]}
    return out
