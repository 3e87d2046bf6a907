"""Linear probes of what a model's image features carry (`sicog probe`'s first measurement).

Features of the vision tower (its `vision_feature_layer`) and of the connector (the projector's
tokens) are computed for the images of one split and tested on another. Mean-pooled over the image
they are probed for the object count, the presence of each colour and each shape (balanced accuracy,
chance 0.5) and the background; taken at each object's centre (the tower's patch, the connector's
window) for the object's shape and colour. Images are resized to the tower's square input, as in its
pre-training.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from sicog.data.records import read_records
from sicog.world.vocab import BACKGROUNDS, COLOURS, SHAPES

PROBE_TARGETS = ("count", "colour", "shape", "background", "object_shape", "object_colour")


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
