"""Helpers shared by the training tests: a tiny saved model and a handful of records and images."""
import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from sicog.data.formats import COD_HEADINGS, format_steps

COLOURS = ["red", "green", "blue", "yellow"]


def save_tiny_model(path: Path, seed: int = 0) -> Path:
    from tiny_models import build_random_tiny

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


def largest_change(before: torch.nn.Module, after: torch.nn.Module) -> float:
    """The largest absolute change of any weight between two copies of a module."""
    old = before.state_dict()
    return max((v - old[k]).abs().max().item() for k, v in after.state_dict().items())


def train(*args: str) -> int:
    """Run `sicog train` in-process with the given flags."""
    from sicog.cli import main

    return main(["train", *args])


def read_log(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines() if x.strip()]


def resume_world(root: Path) -> tuple[Path, Path]:
    """A saved tiny model and 6 image + 2 text-only records for the kill-and-resume tests."""
    model_dir = save_tiny_model(root / "model")
    data = make_world(root / "world", n_image=6, n_text=2, sizes=((112, 112), (98, 126)))
    return model_dir, data


def _optimizer_state(ckpt: Path) -> dict:
    return torch.load(ckpt / "optimizer.pt", weights_only=True)["state"]


def check_kill_and_resume(tmp_path, setup, stage, weights, last, kill, extra):
    """Run to the end; copy checkpoint-`kill` into a fresh dir (a kill right after it); resume; compare."""
    model_dir, data = setup
    common = ["--stage", stage, "--model_name_or_path", str(model_dir), "--data_path", str(data),
              "--global_batch_size", "2", "--per_device_train_batch_size", "1", "--save_steps", "1",
              "--save_total_limit", "10", "--learning_rate", "1e-3", *extra]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert train(*common, "--output_dir", str(full)) == 0
    assert (full / f"checkpoint-{kill}" / "train_config.yaml").is_file()  # the resolved config beside each checkpoint
    shutil.copytree(full / f"checkpoint-{kill}", killed / f"checkpoint-{kill}")
    assert train(*common, "--output_dir", str(killed), "--resume_from_checkpoint", "auto") == 0

    # continues at the saved step, with the same losses (same data order, same weights)
    full_log = {x["step"]: x["loss"] for x in read_log(full) if "loss" in x}
    resumed_log = {x["step"]: x["loss"] for x in read_log(killed) if "loss" in x}
    assert min(resumed_log) == kill + 1 and max(resumed_log) == max(full_log) == last
    for step, loss in resumed_log.items():
        assert loss == pytest.approx(full_log[step], rel=1e-5, abs=1e-6), step
    # identical optimizer state at the next checkpoint and identical final weights
    a, b = _optimizer_state(full / f"checkpoint-{last}"), _optimizer_state(killed / f"checkpoint-{last}")
    assert a.keys() == b.keys() and a
    for k in a:
        for name in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(a[k][name], b[k][name], rtol=1e-5, atol=1e-7)
    wa, wb = load_file(str(full / weights)), load_file(str(killed / weights))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
    # and it trained: the weights moved away from the starting model
    start = load_file(str(model_dir / "model.safetensors"))
    key = next(k for k in wa if not k.startswith("language_model")) if stage == "stage2" else None
    if stage == "stage1":
        assert any(not torch.equal(v, start["projector." + k]) for k, v in wa.items())
    else:
        assert not torch.equal(wa[key], start[key])
