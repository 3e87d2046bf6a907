"""Image corruptions for the noisy-candidate variant (SPEC section 1, step 5).

Candidates generated from a corrupted image are the rejected side of the DPO preference pairs.
Four methods, each strong enough that the image visibly changes, each deterministic in its seed:

- `gaussian_blur`: a Gaussian blur whose sigma scales with the image size;
- `color_jitter`: brightness, contrast, saturation and hue shifted away from identity;
- `mirror_rotation`: a horizontal mirror followed by a rotation of 20-160 degrees either way;
- `mask`: several random rectangles filled with black, built as one boolean tensor.

Pure torchvision.transforms.v2 functional ops on uint8 tensors, no global RNG.
"""
from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image

from sicog.generate.settings import AUGMENT_METHODS
from sicog.generate.shard import derive_seed


def parse_methods(spec: str | None) -> list[str]:
    """`"gaussian_blur,mask"` -> ["gaussian_blur", "mask"]; empty -> []. Raises on an unknown name."""
    names = [m.strip() for m in (spec or "").split(",") if m.strip()]
    unknown = [m for m in names if m not in AUGMENT_METHODS]
    if unknown:
        raise ValueError(f"unknown augment method(s) {unknown}; choose from {', '.join(AUGMENT_METHODS)}")
    return list(dict.fromkeys(names))


def choose_method(methods: list[str], seed: int, record_id: str) -> str:
    """The corruption for one record: a seeded choice keyed by the record id."""
    if not methods:
        raise ValueError("no augment methods to choose from")
    return methods[derive_seed(seed, record_id, "augment-method") % len(methods)]


def corrupt(image: Image.Image, method: str, seed: int) -> Image.Image:
    """`image` corrupted by `method`; the same (image, method, seed) always gives the same pixels."""
    if method not in AUGMENT_METHODS:
        raise ValueError(f"unknown augment method {method!r}; choose from {', '.join(AUGMENT_METHODS)}")
    rng = np.random.default_rng(derive_seed(seed, method))
    x = F.pil_to_tensor(image.convert("RGB"))  # uint8 [3, H, W]
    if method == "gaussian_blur":
        x = _blur(x, rng)
    elif method == "color_jitter":
        x = _color_jitter(x, rng)
    elif method == "mirror_rotation":
        x = _mirror_rotation(x, rng)
    else:
        x = _mask(x, rng)
    return F.to_pil_image(x)


def _away_from_one(rng: np.random.Generator, low: float, high: float) -> float:
    """A factor in [low, 1 - gap] or [1 + gap, high] so the change is never negligible."""
    gap = 0.25
    return float(rng.uniform(low, 1 - gap) if rng.random() < 0.5 else rng.uniform(1 + gap, high))


def _blur(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    side = min(x.shape[-2:])
    sigma = float(rng.uniform(0.015, 0.04)) * side + 1.0
    kernel = 2 * min(int(3 * sigma), side - 1) + 1  # odd; reflect padding needs kernel // 2 < side
    return F.gaussian_blur(x, [kernel, kernel], [sigma, sigma])


def _color_jitter(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    x = F.adjust_brightness(x, _away_from_one(rng, 0.4, 1.6))
    x = F.adjust_contrast(x, _away_from_one(rng, 0.4, 1.6))
    x = F.adjust_saturation(x, _away_from_one(rng, 0.2, 1.8))
    hue = float(rng.uniform(0.1, 0.4)) * (1 if rng.random() < 0.5 else -1)
    return F.adjust_hue(x, hue)


def _mirror_rotation(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    angle = float(rng.uniform(20.0, 160.0)) * (1 if rng.random() < 0.5 else -1)
    return F.rotate(F.horizontal_flip(x), angle, interpolation=F.InterpolationMode.BILINEAR, fill=[0.0])


def _mask(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    _, h, w = x.shape
    k = int(rng.integers(3, 7))
    rh = (rng.uniform(0.15, 0.35, k) * h).astype(np.int64) + 1
    rw = (rng.uniform(0.15, 0.35, k) * w).astype(np.int64) + 1
    y0 = torch.from_numpy((rng.random(k) * np.maximum(h - rh, 1)).astype(np.int64))
    x0 = torch.from_numpy((rng.random(k) * np.maximum(w - rw, 1)).astype(np.int64))
    y1, x1 = y0 + torch.from_numpy(rh), x0 + torch.from_numpy(rw)
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    y0, y1, x0, x1 = (t.view(k, 1, 1) for t in (y0, y1, x0, x1))
    inside = ((ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)).any(0)  # [H, W]: in any rectangle
    return x.masked_fill(inside.unsqueeze(0), 0)
