"""Shared by the evaluation tests: a micro world with one corrupt and one missing image, a saved
random tiny model and a fast evaluation config."""
from __future__ import annotations

from pathlib import Path

import yaml

from tiny_models import build_random_tiny
from sicog.data.records import read_records
from sicog.evaluate.settings import EVAL_CONFIGS_DIR
from sicog.world.build import build_world


def eval_world(root: Path) -> dict:
    """{root, world, ckpt, cfg (a fast YAML config), bad: {image: skip reason}} under `root`."""
    world = root / "world"
    build_world(world, "micro", seed=0)
    qa = read_records(world / "data/eval/qa.jsonl")
    images = list(dict.fromkeys(r["image"] for r in qa))
    # Scenes 1 and 3: inside the first records of every benchmark, leaving others to evaluate.
    corrupt, missing = images[1], images[3]
    (world / corrupt).write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (world / missing).unlink()
    model, processor = build_random_tiny(seed=0)
    ckpt = root / "ckpt"
    model.save_pretrained(ckpt)
    processor.save_pretrained(ckpt)
    raw = yaml.safe_load((EVAL_CONFIGS_DIR / "v1.yaml").read_text())
    raw.update(version="v1-test", batch_size=4, max_new_tokens={"qa": 4, "pope": 3, "captions": 6})
    cfg_path = root / "fast.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    return {"root": root, "world": world, "ckpt": ckpt, "cfg": cfg_path, "bad": {corrupt: "unreadable image",
                                                                                  missing: "missing image"}}
