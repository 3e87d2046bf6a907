"""Helpers shared by the training tests: a tiny saved model and a handful of records and images."""
import json
import random
from pathlib import Path

from PIL import Image

from sicog.data.formats import COD_HEADINGS, format_steps

COLOURS = ["red", "green", "blue", "yellow"]


def save_tiny_model(path: Path, seed: int = 0) -> Path:
    from sicog.model.build import build_random_tiny

    model, processor = build_random_tiny(seed=seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def make_world(root: Path, n_image: int = 12, n_text: int = 6, seed: int = 0,
               sizes: tuple = ((112, 112), (224, 112), (96, 160), (300, 200))) -> Path:
    """Images of one coloured square on a background, CoD-style captions, and text-only records."""
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n_image):
        colour = COLOURS[i % len(COLOURS)]
        w, h = sizes[i % len(sizes)]
        im = Image.new("RGB", (w, h), "white")
        im.paste(Image.new("RGB", (w // 3, h // 3), colour), (rng.randint(0, w // 2), rng.randint(0, h // 2)))
        im.save(root / "images" / f"img{i}.png")
        caption = format_steps(COD_HEADINGS, [f"A {colour} square.", f"The square is {colour}.",
                                              "It sits on a white background.", "Nothing else.",
                                              f"A {colour} square on a white background."])
        records.append({"id": f"img{i}", "image": f"images/img{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image step-by-step."},
            {"from": "gpt", "value": caption}]})
    for i in range(n_text):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        records.append({"id": f"txt{i}", "conversations": [
            {"from": "human", "value": f"What is {a} plus {b}?"},
            {"from": "gpt", "value": f"{a} plus {b} is {a + b}."}]})
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    return data


def train(*args: str) -> int:
    """Run `sicog train` in-process with the given flags."""
    from sicog.cli import main

    return main(["train", *args])


def read_log(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines() if x.strip()]
