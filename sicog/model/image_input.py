"""`ImageInput`: one image as the model consumes it (overview, slices, grid)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageInput:
    """Pixels of one image, normalised with the config's mean/std.

    overview: [3, h, w]; slices: [S, 3, hs, ws] in row-major order, or None when not sliced;
    grid: (cols, rows) of the slices, or None.
    """

    overview: torch.Tensor
    slices: torch.Tensor | None = None
    grid: tuple[int, int] | None = None

    def __post_init__(self):
        if self.overview.dim() != 3 or self.overview.shape[0] != 3:
            raise ValueError(f"overview must be [3, h, w], got {tuple(self.overview.shape)}")
        if (self.slices is None) != (self.grid is None):
            raise ValueError("slices and grid must both be set or both be None")
        if self.slices is not None:
            cols, rows = self.grid
            if self.slices.dim() != 4 or self.slices.shape[0] != cols * rows:
                raise ValueError(f"slices {tuple(self.slices.shape)} do not match grid {self.grid}")

    def to(self, *args, **kwargs) -> "ImageInput":
        return ImageInput(
            self.overview.to(*args, **kwargs),
            None if self.slices is None else self.slices.to(*args, **kwargs),
            self.grid,
        )
