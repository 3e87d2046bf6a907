"""Helpers shared by the DPO tests: tiny images and preference pairs in a folder."""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

COLOURS = ["red", "green", "blue", "yellow"]
PROMPT = "<image>\nWhat colour is the square?"
# (width, height): the first is not sliced, the second is (ratio 2 at the tiny tier's scale 112).
SIZES = [(56, 56), (224, 112)]


def good_pairs(root: Path, n: int = 4) -> list[dict]:
    """n pairs, each with its own small image: chosen names the square's colour, rejected another colour."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(n):
        colour = COLOURS[i % len(COLOURS)]
        w, h = SIZES[i % len(SIZES)]
        im = Image.new("RGB", (w, h), "white")
        im.paste(Image.new("RGB", (w // 2, h // 2), colour), (w // 4, h // 4))
        im.save(root / "img" / f"{i}.png")
        pairs.append({"id": f"p{i}", "image": f"img/{i}.png", "prompt": PROMPT,
                      "chosen": f"The square is {colour}.", "rejected": f"The square is {COLOURS[(i + 1) % 4]}."})
    return pairs


def write_pairs(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
