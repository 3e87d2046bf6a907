"""The authors' regrid augmentation size: images resized so that they slice into about N slices."""
from __future__ import annotations

import math


def regrid_size(width: int, height: int, slices: int, scale: int) -> tuple[int, int]:
    """Size with the aspect of (width, height) and area ~slices * scale^2, sides truncated.

    The authors' training augmentation resizes some images to this size so that they slice into
    about `slices` slices (sicog.data.dataset, `regrid_prob`).
    """
    r = math.sqrt(slices * scale * scale / (width * height))
    return max(1, int(width * r)), max(1, int(height * r))
