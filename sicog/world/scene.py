"""Scene graphs: sampling objects, image sizes and layouts from a seed, and reading relations.

A scene is a plain dict (it is what `world.jsonl` stores):
`{"id", "split", "image", "width", "height", "background", "objects": [...]}` where each object is
`{"shape", "colour", "size", "label", "bbox": [x0, y0, x1, y1], "center": [cx, cy], "position"}`.
Within a scene every (colour, shape) pair is unique, so "the red circle" always names one object.
Objects are listed in reading order (position row, then left to right).
"""
from __future__ import annotations

import math
import random

from sicog.world.vocab import BACKGROUNDS, COLOURS, DIGITS, LETTERS, POSITIONS, SHAPES, SIZES

BASE_SIDE = 112          # the tiny tier's image scale: most images have about this area
GAP = 3                  # minimum free pixels between two objects


def scene_rng(seed: int, split: str, index: int) -> random.Random:
    """The generator of one scene: independent of the order in which scenes are built."""
    return random.Random(f"sicog-world:{seed}:{split}:{index}")


def sample_image_size(rng: random.Random) -> tuple[int, int]:
    """Mostly about 112x112 in area; some wide or tall; some 2-4x larger (sliced at scale 112)."""
    kind = rng.random()
    base = BASE_SIDE * BASE_SIDE
    if kind < 0.7:
        area = base * rng.uniform(0.8, 1.0)
        aspect = rng.choice((1.0, 1.0, 4 / 3, 3 / 4, 5 / 4, 4 / 5))
    elif kind < 0.85:
        area = base * rng.uniform(1.3, 1.8)
        aspect = rng.choice((2.0, 0.5, 2.5, 0.4))
    else:
        area = base * rng.uniform(2.0, 4.0)
        aspect = math.exp(rng.uniform(math.log(0.6), math.log(1.7)))
    width = max(56, round(math.sqrt(area * aspect)))
    height = max(56, round(area / width))
    return width, height


def position_of(cx: float, cy: float, width: int, height: int) -> str:
    col = min(2, int(3 * cx / width))
    row = min(2, int(3 * cy / height))
    return POSITIONS[3 * row + col]


def _overlaps(box: list[int], boxes: list[list[int]]) -> bool:
    return any(
        box[0] < b[2] + GAP and b[0] < box[2] + GAP and box[1] < b[3] + GAP and b[1] < box[3] + GAP
        for b in boxes
    )


def sample_scene(seed: int, split: str, index: int) -> dict:
    """One scene, a pure function of (seed, split, index)."""
    rng = scene_rng(seed, split, index)
    width, height = sample_image_size(rng)
    background = rng.choice(sorted(BACKGROUNDS))
    n_objects = rng.choices((1, 2, 3, 4), weights=(2, 3, 3, 2))[0]
    scale = math.sqrt(width * height)
    used: set[tuple[str, str]] = set()
    objects: list[dict] = []
    for _ in range(n_objects):
        for _attempt in range(10):
            pair = (rng.choice(sorted(COLOURS)), rng.choice(SHAPES))
            if pair not in used:
                break
        else:
            continue
        size = rng.choice(sorted(SIZES))
        diameter = min(round(SIZES[size] * scale), int(0.9 * min(width, height)))
        label = None
        if size != "small" and rng.random() < 0.45:  # small objects are too small to read
            label = rng.choice(LETTERS) if rng.random() < 0.7 else rng.choice(DIGITS)
        for _attempt in range(60):
            x0 = rng.randint(1, width - diameter - 1)
            y0 = rng.randint(1, height - diameter - 1)
            box = [x0, y0, x0 + diameter, y0 + diameter]
            if not _overlaps(box, [o["bbox"] for o in objects]):
                break
        else:
            continue  # no room left: the scene keeps fewer objects
        used.add(pair)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        objects.append({
            "shape": pair[1],
            "colour": pair[0],
            "size": size,
            "label": label,
            "bbox": box,
            "center": [cx, cy],
            "position": position_of(cx, cy, width, height),
        })
    objects.sort(key=lambda o: (POSITIONS.index(o["position"]) // 3, o["center"][0], o["center"][1]))
    scene_id = f"{split}-{index:05d}"
    return {
        "id": scene_id,
        "split": split,
        "image": f"images/{split}/{scene_id}.png",
        "width": width,
        "height": height,
        "background": background,
        "objects": objects,
    }


def relation(a: dict, b: dict) -> str | None:
    """Where `a` is relative to `b` ("left", "right", "above", "below"), or None when unclear.

    Clear means: one axis dominates (at least 1.5x the other) and the offset is at least a third of
    the larger object's side.
    """
    dx = a["center"][0] - b["center"][0]
    dy = a["center"][1] - b["center"][1]
    side = max(a["bbox"][2] - a["bbox"][0], b["bbox"][2] - b["bbox"][0])
    if abs(dx) >= 1.5 * abs(dy) and abs(dx) >= side / 3:
        return "left" if dx < 0 else "right"
    if abs(dy) >= 1.5 * abs(dx) and abs(dy) >= side / 3:
        return "above" if dy < 0 else "below"
    return None


def entirely_left_of(a: dict, b: dict) -> bool:
    """`a` lies wholly to the left of `b` (a's right edge before b's left edge)."""
    return a["bbox"][2] < b["bbox"][0]
