"""`sicog probe`: does a model read its images? Perception gates for a model on a world.

Two measurements, each a few minutes on a CPU:

1. **Linear probes** of what the image features carry. Features of the vision tower (its
   `vision_feature_layer`) and of the connector (the projector's tokens) are computed for the
   images of one split (default `align`) and tested on another (default `sft`). Mean-pooled over
   the image they are probed for the object count, the presence of each colour and each shape
   (balanced accuracy, chance 0.5) and the background; taken at each object's centre (the tower's
   patch, the connector's window) for the object's shape and colour. Images are resized to the
   tower's square input, as in its pre-training.
2. **Answer reading**: the teacher-forced answer of every QA and POPE record of a split (the
   evaluation prompt, the gold answer's tokens), once with the record's own image and once with
   another record's image (the derangement of `sicog evaluate --images shuffled`). Per skill: the
   mean answer-token loss and the accuracy (every answer token is the model's argmax). A model that
   ignores its images scores the same both ways.

`GATES` holds the thresholds a mini world and tiny tier must pass before the SICOG cycle can show
an effect on it; `format_table` prints each figure beside its gate.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from sicog.data.checks import InputError, check_input_dir, check_output_file, check_world
from sicog.data.records import read_records, write_json
from sicog.evaluate.prompts import eval_prompt
from sicog.evaluate.runner import benchmark_file, shuffled_images
from sicog.evaluate.settings import load_eval_config
from sicog.runtime import resolve_device
from sicog.world.vocab import BACKGROUNDS, COLOURS, SHAPES

log = logging.getLogger(__name__)

IGNORE = -100
# Minimum figures (probe accuracy / balanced accuracy; answer accuracy gap own - shuffled).
GATES: dict[str, dict[str, float]] = {
    "tower": {"shape": 0.85, "colour": 0.90, "count": 0.70},
    "answers": {"gap": 0.20},
}
PROBE_TARGETS = ("count", "colour", "shape", "background", "object_shape", "object_colour")


# -- scenes and labels ---------------------------------------------------------------------------
def load_scenes(world: Path, split: str, limit: int | None) -> list[dict]:
    """Scene graphs of one split, in id order, from `world.jsonl`."""
    path = world / "world.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --world must be a built world (`sicog world build`)")
    scenes = [s for s in read_records(path) if s.get("split") == split and s.get("objects") is not None]
    scenes.sort(key=lambda s: s["id"])
    if not scenes:
        raise ValueError(f"the world has no images in split {split!r}")
    return scenes[:limit] if limit else scenes


def image_labels(scenes: list[dict]) -> dict[str, torch.Tensor]:
    """Per image: count (class = number of objects), colour and shape presence (multi-hot), background."""
    colours, shapes, backgrounds = sorted(COLOURS), list(SHAPES), sorted(BACKGROUNDS)
    return {
        "count": torch.tensor([len(s["objects"]) for s in scenes]),
        "colour": torch.tensor([[float(any(o["colour"] == c for o in s["objects"])) for c in colours] for s in scenes]),
        "shape": torch.tensor([[float(any(o["shape"] == h for o in s["objects"])) for h in shapes] for s in scenes]),
        "background": torch.tensor([backgrounds.index(s["background"]) for s in scenes]),
    }


def object_labels(scenes: list[dict]) -> dict[str, torch.Tensor]:
    """Per object (scene order, then object order): its shape and colour class."""
    colours, shapes = sorted(COLOURS), list(SHAPES)
    objs = [o for s in scenes for o in s["objects"]]
    return {"object_shape": torch.tensor([shapes.index(o["shape"]) for o in objs]),
            "object_colour": torch.tensor([colours.index(o["colour"]) for o in objs])}


def object_features(feats: torch.Tensor, scenes: list[dict], grid: int) -> torch.Tensor:
    """Per object (scene order, then object order), the feature of the row-major grid x grid cell
    holding its centre (square resize): `feats` [N images, grid*grid, C] -> [N objects, C]."""
    image, cell = [], []
    for i, s in enumerate(scenes):
        for o in s["objects"]:
            col = min(grid - 1, int(o["center"][0] / s["width"] * grid))
            row = min(grid - 1, int(o["center"][1] / s["height"] * grid))
            image.append(i)
            cell.append(row * grid + col)
    return feats[torch.tensor(image), torch.tensor(cell)]


# -- features ------------------------------------------------------------------------------------
class Features:
    """Image features of a SICOG model (tower and connector) or of a CLIP vision tower alone."""

    def __init__(self, model=None, vision=None, image_mean=None, image_std=None, image_size: int | None = None,
                 feature_layer: int = -2):
        if (model is None) == (vision is None):
            raise ValueError("give exactly one of a SICOG model or a CLIP vision tower")
        self.model, self.vision, self.feature_layer = model, vision, feature_layer
        if model is not None:
            cfg = model.config
            self.size, self.patch = cfg.image_scale, cfg.patch_size
            image_mean, image_std = cfg.image_mean, cfg.image_std
        else:
            self.size, self.patch = image_size or vision.config.image_size, vision.config.patch_size
        self.mean = torch.tensor(image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(image_std).view(1, 3, 1, 1)

    @property
    def parts(self) -> tuple[str, ...]:
        return ("tower", "connector") if self.model is not None else ("tower",)

    def pixels(self, world: Path, scenes: list[dict]) -> torch.Tensor:
        import numpy as np

        arrays = []
        for s in scenes:
            with Image.open(world / s["image"]) as im:
                arrays.append(np.asarray(im.convert("RGB").resize((self.size, self.size), Image.Resampling.BICUBIC)))
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
        return (x - self.mean) / self.std

    @torch.inference_mode()
    def compute(self, world: Path, scenes: list[dict], batch_size: int, device) -> dict[str, torch.Tensor]:
        """{part: [N, cells, C]} for every part, on the CPU in fp32."""
        out: dict[str, list[torch.Tensor]] = defaultdict(list)
        side = self.size // self.patch
        for start in tqdm(range(0, len(scenes), batch_size), desc="probe features", unit="batch"):
            px = self.pixels(world, scenes[start:start + batch_size]).to(device)
            if self.model is not None:
                feats = self.model.model.vision_features(px.to(self.model.dtype))
                out["tower"].append(feats.float().cpu())
                grid = feats.reshape(len(px), side, side, feats.shape[-1])
                out["connector"].append(self.model.projector(grid).float().cpu())
            else:
                hidden = self.vision(pixel_values=px, output_hidden_states=True).hidden_states[self.feature_layer]
                out["tower"].append(hidden[:, 1:].float().cpu())
        return {k: torch.cat(v) for k, v in out.items()}


# -- linear probes -------------------------------------------------------------------------------
def fit_linear(x: torch.Tensor, y: torch.Tensor, multilabel: bool, l2: float = 1e-3, iters: int = 200):
    """A standardised linear probe fit by L-BFGS: softmax for classes, per-label sigmoid for multi-hot
    targets (positives weighted to balance each label). Returns a predict function."""
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    k = y.shape[1] if multilabel else int(y.max()) + 1
    w = torch.zeros(z.shape[1], k, requires_grad=True)
    b = torch.zeros(k, requires_grad=True)
    if multilabel:
        pos = y.sum(0)
        pos_weight = ((len(y) - pos) / pos.clamp_min(1)).clamp(max=100)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = z @ w + b
        if multilabel:
            loss = F.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight)
        else:
            loss = F.cross_entropy(logits, y)
        loss = loss + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w, b = w.detach(), b.detach()

    def predict(xt: torch.Tensor) -> torch.Tensor:
        logits = ((xt - mean) / std) @ w + b
        return (logits > 0).float() if multilabel else logits.argmax(1)

    return predict


def balanced_accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over labels (with both classes in the test set) of (TPR + TNR) / 2."""
    scores = []
    for j in range(y.shape[1]):
        pos, neg = y[:, j] == 1, y[:, j] == 0
        if pos.any() and neg.any():
            scores.append(0.5 * (float((pred[pos, j] == 1).float().mean()) + float((pred[neg, j] == 0).float().mean())))
    return sum(scores) / len(scores) if scores else float("nan")


def probe_part(train: torch.Tensor, test: torch.Tensor, train_scenes: list[dict], test_scenes: list[dict]) -> dict:
    """Every probe target for one part's features [N, cells, C] (cells a square grid, row-major)."""
    grid = math.isqrt(train.shape[1])
    if grid * grid != train.shape[1]:
        raise ValueError(f"{train.shape[1]} feature cells do not form a square grid")
    result = {}
    ytr, yte = image_labels(train_scenes), image_labels(test_scenes)
    gtr, gte = train.mean(1), test.mean(1)
    for target in ("count", "colour", "shape", "background"):
        multilabel = target in ("colour", "shape")
        predict = fit_linear(gtr, ytr[target], multilabel)
        pred = predict(gte)
        result[target] = balanced_accuracy(pred, yte[target]) if multilabel else float((pred == yte[target]).float().mean())
    otr, ote = object_labels(train_scenes), object_labels(test_scenes)
    ltr, lte = object_features(train, train_scenes, grid), object_features(test, test_scenes, grid)
    for target in ("object_shape", "object_colour"):
        predict = fit_linear(ltr, otr[target], multilabel=False)
        result[target] = float((predict(lte) == ote[target]).float().mean())
    return result


def majority_rates(train_scenes: list[dict], test_scenes: list[dict]) -> dict:
    """What always answering the training set's most frequent class scores (presence: 0.5 by construction)."""
    out = {}
    ytr, yte = {**image_labels(train_scenes), **object_labels(train_scenes)}, {**image_labels(test_scenes), **object_labels(test_scenes)}
    for target in PROBE_TARGETS:
        if target in ("colour", "shape"):
            out[target] = 0.5
        else:
            top = int(torch.bincount(ytr[target]).argmax())
            out[target] = float((yte[target] == top).float().mean())
    return out


def run_probes(features: Features, world: Path, train_split: str, test_split: str, n_train: int | None,
               n_test: int | None, batch_size: int = 32, device="cpu") -> dict:
    train_scenes, test_scenes = load_scenes(world, train_split, n_train), load_scenes(world, test_split, n_test)
    tr = features.compute(world, train_scenes, batch_size, device)
    te = features.compute(world, test_scenes, batch_size, device)
    result = {"train": {"split": train_split, "images": len(train_scenes)},
              "test": {"split": test_split, "images": len(test_scenes)},
              "majority": majority_rates(train_scenes, test_scenes)}
    for part in features.parts:
        result[part] = probe_part(tr[part], te[part], train_scenes, test_scenes)
    return result


# -- answer reading ------------------------------------------------------------------------------
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


# -- report --------------------------------------------------------------------------------------
def gate_checks(result: dict) -> list[dict]:
    """Each gate with its figure and whether it passes (absent parts are not checked)."""
    checks = []
    if "tower" in result.get("probes", {}):
        for target, need in GATES["tower"].items():
            value = result["probes"]["tower"][target]
            checks.append({"gate": f"tower {target}", "value": value, "need": need, "pass": value >= need})
    if "answers" in result:
        value = result["answers"]["gap"]["overall"]["accuracy"]
        need = GATES["answers"]["gap"]
        checks.append({"gate": "answer accuracy, own - shuffled", "value": value, "need": need, "pass": value >= need})
    return checks


def format_table(result: dict) -> str:
    lines = []
    probes = result.get("probes")
    if probes:
        parts = [p for p in ("tower", "connector") if p in probes]
        lines.append(f"Linear probes (train {probes['train']['split']} n={probes['train']['images']}, "
                     f"test {probes['test']['split']} n={probes['test']['images']}; presence: balanced accuracy)")
        lines.append("| target | majority | " + " | ".join(parts) + " |")
        lines.append("|---|---:|" + "---:|" * len(parts))
        for t in PROBE_TARGETS:
            lines.append(f"| {t} | {probes['majority'][t]:.3f} | " + " | ".join(f"{probes[p][t]:.3f}" for p in parts) + " |")
    answers = result.get("answers")
    if answers:
        if lines:
            lines.append("")
        lines.append(f"Answer reading, teacher-forced ({answers['split']}, eval config {answers['eval_config']})")
        lines.append("| skill | n | accuracy own | accuracy shuffled | gap | loss own | loss shuffled |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for k, own in answers["own"].items():
            sh = answers["shuffled"][k]
            lines.append(f"| {k} | {own['n']} | {own['accuracy']:.3f} | {sh['accuracy']:.3f} | "
                         f"{own['accuracy'] - sh['accuracy']:+.3f} | {own['loss']:.3f} | {sh['loss']:.3f} |")
    checks = gate_checks(result)
    if checks:
        lines.append("")
        lines.append("Gates: " + "; ".join(f"{c['gate']} {c['value']:.3f} (>= {c['need']}) "
                                           f"{'pass' if c['pass'] else 'FAIL'}" for c in checks))
    return "\n".join(lines)


def probe(world: str | Path, model_path: str | Path | None = None, vision_path: str | Path | None = None, *,
          train_split: str = "align", test_split: str = "sft", n_train: int | None = 1500, n_test: int | None = 500,
          answer_split: str = "val", answer_limit: int | None = None, parts: tuple[str, ...] = ("probes", "answers"),
          eval_config: str = "v1", batch_size: int = 32, device: str | None = None) -> dict:
    """Run the probes and/or the answer reading; returns the result dict (see the module doc)."""
    world = Path(world)
    device = resolve_device(device)
    t0 = time.time()
    result: dict = {"world": str(world)}
    if model_path is not None:
        from sicog.model.folder import load_model_folder

        model, processor = load_model_folder(model_path, "--model")
        model = model.to(device).eval()
        features = Features(model=model)
        result["model"] = str(model_path)
    else:
        from transformers import CLIPImageProcessor, CLIPVisionModel

        if vision_path is None or not (Path(vision_path) / "config.json").is_file():
            raise FileNotFoundError(f"--vision: {vision_path} is not a CLIP vision folder (no config.json)")
        vision = CLIPVisionModel.from_pretrained(vision_path).to(device).eval()
        ip = CLIPImageProcessor.from_pretrained(vision_path)
        features = Features(vision=vision, image_mean=ip.image_mean, image_std=ip.image_std)
        result["vision"] = str(vision_path)
        parts = tuple(p for p in parts if p != "answers")
    if "probes" in parts:
        result["probes"] = run_probes(features, world, train_split, test_split, n_train, n_test, batch_size, device)
    if "answers" in parts:
        result["answers"] = run_answers(model, processor, world, answer_split, eval_config, answer_limit,
                                        max(1, batch_size // 2), device)
    result["gates"] = gate_checks(result)
    result["seconds"] = round(time.time() - t0, 1)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a SICOG checkpoint folder: probes of tower and connector, and answer reading")
    src.add_argument("--vision", help="a CLIP vision folder (e.g. `world pretrain`'s OUT/clip): tower probes only")
    parser.add_argument("--world", required=True, help="a built world folder")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    parser.add_argument("--parts", default="probes,answers", help="comma-separated: probes, answers")
    parser.add_argument("--train-split", default="align", help="images the linear probes are fit on")
    parser.add_argument("--test-split", default="sft", help="images the linear probes are tested on")
    parser.add_argument("--n-train", type=int, default=1500)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--split", default="val", choices=["val", "eval"], help="benchmark split of the answer reading")
    parser.add_argument("--limit", type=int, default=None, help="first N records of each benchmark")
    parser.add_argument("--eval-config", default="v1")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default=None)


def run(args: argparse.Namespace) -> int:
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    bad = [p for p in parts if p not in ("probes", "answers")]
    if bad or not parts:
        raise InputError(f"--parts: unknown {bad}; choose from probes,answers")
    for name in ("n_train", "n_test", "limit", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1")
    if args.out:
        check_output_file(args.out, "--out")
    if args.model is not None:
        from sicog.model.folder import check_model_folder

        check_model_folder(args.model, "--model")
    else:
        check_input_dir(args.vision, "--vision", "a CLIP vision folder")
        if not (Path(args.vision) / "config.json").is_file():
            raise InputError(f"--vision {args.vision} is not a CLIP vision folder (no config.json)")
    world = check_world(args.world, "--world")
    if "probes" in parts:
        for arg, split in (("--train-split", args.train_split), ("--test-split", args.test_split)):
            try:
                load_scenes(world, split, 1)
            except ValueError as e:
                raise InputError(f"{arg}: {e}") from None
    if "answers" in parts and args.model is not None:
        try:
            load_eval_config(args.eval_config)
        except ValueError as e:
            raise InputError(f"--eval-config: {e}") from None
        missing = [str(p) for b in ("qa", "pope") if not (p := benchmark_file(world, args.split, b)).is_file()]
        if missing:
            raise InputError(f"--world {world}: benchmark files not found: {missing} (is it a built world?)")
    result = probe(args.world, args.model, args.vision, train_split=args.train_split, test_split=args.test_split,
                   n_train=args.n_train, n_test=args.n_test, answer_split=args.split, answer_limit=args.limit,
                   parts=parts, eval_config=args.eval_config, batch_size=args.batch_size, device=args.device)
    print(format_table(result))
    print(f"({result['seconds']} s)")
    if args.out:
        write_json(args.out, result)
        log.info("wrote %s", args.out)
    return 0
