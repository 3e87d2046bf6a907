"""The token layout at an `<image>` (SPEC section 3), shared by the processor and the model.

Resampler mode (LLaVA-UHD v1), with Q = query_grid:
- without slices: the Q*Q overview tokens;
- with a (cols, rows) grid: the slice tokens in raster order over the whole image
  (rows*Q token rows of cols*Q tokens), a row separator after each token row, one overview
  separator, then the Q*Q overview tokens. As in the authors' code (whose released weights
  depend on it, so it holds at every tier), the separator before the overview is the first of
  their per-cell separators: the overview separator when the grid has 2 or more columns, the row
  separator when it has one column (1x2, 1x3).

MLP mode (the low-resolution LLaVA variant): one token per patch of the square image_scale image.

The processor writes `expand(...)` in place of `<image>`: image-token ids where the model splices
features and the separator token ids as ordinary tokens. The model checks that the number of
image-token positions equals `num_features(...)` summed over the batch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .slicing import long_side_size, slice_geometry

PROJECTOR_TYPES = ("resampler", "mlp")


@dataclass(frozen=True)
class ImageLayout:
    projector_type: str = "resampler"
    image_scale: int = 336
    patch_size: int = 14
    max_slices: int = 7
    query_grid: int = 12
    eval_long_side: int | None = 1024

    def __post_init__(self):
        if self.projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"projector_type must be one of {PROJECTOR_TYPES}, got {self.projector_type!r}")
        if self.image_scale % self.patch_size:
            raise ValueError(f"image_scale {self.image_scale} is not a multiple of patch_size {self.patch_size}")

    @classmethod
    def from_dict(cls, d: dict) -> "ImageLayout":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def to_dict(self) -> dict:
        return asdict(self)

    # --- geometry -------------------------------------------------------------------------
    def input_size(self, size: tuple[int, int], for_generation: bool) -> tuple[int, int]:
        """Image size after the eval-time long-side resize (applied only for generation)."""
        if for_generation and self.eval_long_side and self.projector_type == "resampler":
            return long_side_size(size[0], size[1], self.eval_long_side)
        return size

    def grid(self, size: tuple[int, int], for_generation: bool = False) -> tuple[int, int] | None:
        """(cols, rows) of the slices for an image of `size` = (W, H), or None when not sliced."""
        if self.projector_type == "mlp":
            return None
        w, h = self.input_size(size, for_generation)
        return slice_geometry(w, h, self.max_slices, self.image_scale, self.patch_size).grid

    # --- counts ---------------------------------------------------------------------------
    @property
    def tokens_per_image(self) -> int:
        """Feature tokens per encoded image (overview or slice)."""
        if self.projector_type == "mlp":
            return (self.image_scale // self.patch_size) ** 2
        return self.query_grid ** 2

    def num_features(self, grid: tuple[int, int] | None) -> int:
        """Number of image-feature positions (spliced by the model) for one image."""
        n_slices = 0 if grid is None else grid[0] * grid[1]
        return self.tokens_per_image * (1 + n_slices)

    def num_positions(self, grid: tuple[int, int] | None) -> int:
        """Number of sequence positions one `<image>` expands into (features and separators)."""
        if grid is None:
            return self.num_features(None)
        token_rows = grid[1] * self.query_grid
        return self.num_features(grid) + token_rows + 1

    def expand(self, grid: tuple[int, int] | None, image_id: int, row_id: int, overview_id: int) -> list[int]:
        """The ids that replace one `<image>`."""
        if grid is None:
            return [image_id] * self.num_features(None)
        cols, rows = grid
        q = self.query_grid
        row = [image_id] * (cols * q) + [row_id]
        before_overview = overview_id if cols > 1 else row_id
        return row * (rows * q) + [before_overview] + [image_id] * (q * q)
