"""Image slicing (SPEC section 3; MiniCPM-V / LLaVA-UHD v1 geometry).

`slice_geometry` decides the sizes from the image size alone, so the processor can count tokens
without touching pixels; `slice_image` applies it to a PIL image.

Rules, with `scale` = 336, `patch` = 14 and `max_slices` = 7 at paper scale:

- `ratio = W*H / scale^2`, `multiple = min(ceil(ratio), max_slices)`.
- `multiple <= 1`: no slices; the image is resized keeping its aspect to area ~scale^2
  (upscaling allowed), both sides floored to multiples of `patch`.
- otherwise: slice counts {multiple-1, multiple, multiple+1} without 1 and without counts above
  `max_slices`; every factorisation [cols, rows] of each (cols ascending); the grid minimising
  |log(W/H) - log(cols/rows)| (the first one wins ties). The overview is the image resized to area
  ~scale^2; the slices come from resizing the image so that every cell has area ~scale^2 (cell
  sides multiples of `patch`) and cutting it row-major. The cell size is the authors' exactly:
  each image side floored to a multiple of its grid count, divided by it, rescaled to area
  scale^2 at the cell's own aspect r with `h = int(scale / sqrt(r))`, `w = int(h * r)`, then each
  side floored to a multiple of `patch` (`refine_size`).

Every side is a multiple of `patch` and at least `patch`. For aspect ratios beyond
(scale/patch)^2 : 1 (e.g. 1x4000) the short side is clamped to `patch`; the long side is then
chosen to keep the area ~scale^2 instead of growing without bound (the authors' code would give
a 14 x 21238 image for a 1x4000 input).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class SliceGeometry:
    overview_size: tuple[int, int]          # (width, height) of the overview image
    grid: tuple[int, int] | None            # (cols, rows), None when the image is not sliced
    refine_size: tuple[int, int] | None     # (width, height) of the image the slices are cut from

    @property
    def slice_size(self) -> tuple[int, int] | None:
        if self.grid is None:
            return None
        return (self.refine_size[0] // self.grid[0], self.refine_size[1] // self.grid[1])

    @property
    def num_slices(self) -> int:
        return 0 if self.grid is None else self.grid[0] * self.grid[1]


def _snap(length: float, patch: int) -> int:
    """Floor to a multiple of `patch`, at least `patch`."""
    return max(int(length // patch) * patch, patch)


def fit_area(width: float, height: float, scale: int, patch: int) -> tuple[int, int]:
    """Size with the aspect of (width, height) and area ~scale^2, sides multiples of `patch`."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    aspect = width / height
    h = math.floor(scale / math.sqrt(aspect))
    w = math.floor(h * aspect)
    area_cells = (scale // patch) ** 2 if scale >= patch else 1
    if w < patch:        # extreme tall image: short side clamped, long side keeps the area
        return patch, _snap(min(h, area_cells * patch), patch)
    if h < patch:        # extreme wide image
        return _snap(min(w, area_cells * patch), patch), patch
    return _snap(w, patch), _snap(h, patch)


def best_grid(width: int, height: int, multiple: int, max_slices: int) -> tuple[int, int]:
    """The [cols, rows] factorisation whose aspect is closest (in log) to the image's."""
    counts = [n for n in (multiple - 1, multiple, multiple + 1) if n != 1 and 1 <= n <= max_slices]
    log_aspect = math.log(width / height)
    best, best_err = (1, 1), float("inf")
    for n in counts:
        for cols in range(1, n + 1):
            if n % cols:
                continue
            rows = n // cols
            err = abs(log_aspect - math.log(cols / rows))
            if err < best_err:
                best, best_err = (cols, rows), err
    return best


def slice_geometry(width: int, height: int, max_slices: int, scale: int, patch: int) -> SliceGeometry:
    """Sizes of the overview and slices for an image of `width` x `height` pixels."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if patch <= 0 or scale < patch or max_slices < 0:
        raise ValueError(f"bad slicing parameters: scale={scale} patch={patch} max_slices={max_slices}")
    overview = fit_area(width, height, scale, patch)
    ratio = width * height / (scale * scale)
    multiple = min(math.ceil(ratio), max_slices)
    if multiple <= 1:
        return SliceGeometry(overview, None, None)
    grid = best_grid(width, height, multiple, max_slices)
    return SliceGeometry(overview, grid, refine_size(width, height, grid, scale, patch))


def refine_size(width: int, height: int, grid: tuple[int, int], scale: int, patch: int) -> tuple[int, int]:
    """(width, height) of the image the (cols, rows) grid of slices is cut from.

    Each side is first floored to a multiple of its grid count (at least the count), so the cell
    is a whole number of pixels before it is rescaled to area ~scale^2.
    """
    cols, rows = grid
    cell_w, cell_h = fit_area(_snap(width, cols) // cols, _snap(height, rows) // rows, scale, patch)
    return cell_w * cols, cell_h * rows


def long_side_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """Size with the longer side resized to `long_side`, keeping aspect (short side at least 1 px)."""
    if max(width, height) == long_side:
        return width, height
    s = long_side / max(width, height)
    return max(1, round(width * s)), max(1, round(height * s))


def resize_long_side(image: Image.Image, long_side: int) -> Image.Image:
    size = long_side_size(image.width, image.height, long_side)
    return image if size == image.size else image.resize(size, Image.Resampling.BICUBIC)


def slice_image(image: Image.Image, max_slices: int, scale: int, patch: int):
    """Returns (overview image, slices in row-major order, grid (cols, rows) or None)."""
    geo = slice_geometry(image.width, image.height, max_slices, scale, patch)
    overview = image.resize(geo.overview_size, Image.Resampling.BICUBIC)
    if geo.grid is None:
        return overview, [], None
    cols, rows = geo.grid
    refined = image.resize(geo.refine_size, Image.Resampling.BICUBIC)
    sw, sh = geo.slice_size
    slices = [refined.crop((c * sw, r * sh, (c + 1) * sw, (r + 1) * sh)) for r in range(rows) for c in range(cols)]
    return overview, slices, geo.grid
