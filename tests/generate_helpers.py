"""Shared by the generation tests: a saved random tiny model and a small input set with bad records."""
from __future__ import annotations

import json
import os
from pathlib import Path

from PIL import Image, ImageDraw

from sicog.data.formats import to_step_by_step_question
from sicog.data.records import read_records, write_jsonl

GOOD = 8


def save_tiny_model(folder: Path) -> Path:
    from tiny_models import build_random_tiny, spread_llm_weights

    model, processor = build_random_tiny(seed=0)
    spread_llm_weights(model)  # context-dependent output: equality checks compare real sequences
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def draw(i: int) -> Image.Image:
    w, h = 70 + 60 * (i % 4), 60 + 40 * (i % 3)
    img = Image.new("RGB", (w, h), (40 * i % 255, 120, 200 - 10 * i))
    ImageDraw.Draw(img).ellipse([5, 5, w // 2, h // 2], fill=(250, 20 * i % 255, 30))
    return img


def make_inputs(folder: Path, bad: bool = True) -> Path:
    """GOOD usable reasoning records (`q0`..), then (when `bad`) one record per kind of unusable input."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(GOOD):
        draw(i).save(folder / "img" / f"{i}.png")
        q = to_step_by_step_question(f"How many shapes are there in this {'very ' * i}small picture?")
        turn = {"from": "human", "value": "<image>\n" + q}
        recs.append({"id": f"q{i}", "image": f"img/{i}.png", "conversations": [turn]})
    if bad:
        (folder / "img" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
        ask = [{"from": "human", "value": "<image>\nWhat is it? Answer the question step-by-step."}]
        recs += [
            {"id": "missing", "image": "img/nope.png", "conversations": ask},
            {"id": "corrupt", "image": "img/corrupt.png", "conversations": ask},
            {"id": "noquestion", "image": "img/0.png", "conversations": []},
            {"id": "noimage", "conversations": ask},
            {"id": "q1", "image": "img/2.png", "conversations": ask},  # duplicate id
        ]
    path = folder / "questions.jsonl"
    write_jsonl(path, recs)
    return path


def gen_args(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["generate", "--model", str(model), "--data", str(data), "--image-folder", str(data.parent),
            "--out", str(out), "--task", "reasoning",
            "--num-candidates", "3", "--temperature", "1.0", "--top-p", "0.95", "--max-new-tokens", "6",
            "--seed", "5", *extra]


def merged(out: Path) -> dict[str, list[str]]:
    return {r["id"]: r["candidates"] for r in read_records(out)}


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


# Subprocess runs of `sicog generate` that last long enough to be killed or sharded mid-way.
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SLOW = ("--batch-size", "1", "--max-new-tokens", "24", "--min-new-tokens", "24")


def merge(data: Path, out: Path) -> list[dict]:
    """Merge the shards of OUT (asserting success) and return the merged records."""
    from sicog.cli import main
    from sicog.generate.shard import shard_glob

    assert main(["merge-candidates", "--inputs", str(data), "--shards", shard_glob(out), "--out", str(out)]) == 0
    return merged(out)


def reference_run(root: Path) -> tuple[Path, Path, list[dict]]:
    """(model, inputs, merged candidates) of one uninterrupted single-process run under `root`."""
    from sicog.cli import main

    model, data = save_tiny_model(root / "model"), make_inputs(root / "data")
    ref = root / "ref" / "cands.jsonl"
    assert main(gen_args(model, data, ref, *SLOW)) == 0
    return model, data, merge(data, ref)
