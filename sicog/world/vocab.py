"""The mini world's vocabulary: shapes, colours, sizes, backgrounds, positions and number words.

Scene sampling, rendering, the gold texts and the caption parser all read these tables, so a word
means the same thing everywhere.
"""
from __future__ import annotations

from sicog.data.answers import NUMBER_WORDS  # noqa: F401  (zero to twenty; re-exported)

# Four shapes and five colours that stay distinct at the tiny tier's 14-pixel patches (a wider
# vocabulary of 8 shapes and 8 colours left the small CLIP encoding no shape at all: background plus
# the set of colours identified almost every image of a contrastive batch).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")

# Object colours (RGB). Names are single words so that "<colour> <shape>" is always two words.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "yellow": (240, 215, 30),
    "green": (45, 165, 60),
    "blue": (40, 85, 220),
    "purple": (135, 55, 185),
}

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (248, 248, 248),
    "gray": (150, 150, 150),
    "black": (22, 22, 22),
    "beige": (230, 218, 190),
}

# Size class -> object diameter as a fraction of sqrt(width * height): at the tiny tier's 112-pixel
# scale a small object is 34 px, about 2.4 patches of 14 px, a large one 47 px.
SIZES: dict[str, float] = {"small": 0.30, "medium": 0.36, "large": 0.42}
# How each size is written in descriptions (the parser reads both forms).
SIZE_WORDS: dict[str, str] = {"small": "small", "medium": "medium-sized", "large": "large"}

LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"  # no I/O/Q: too close to 1/0 in a bitmap font
DIGITS = "23456789"                  # no 0/1 for the same reason

# 3x3 grid of the object centre, row-major.
POSITIONS: tuple[str, ...] = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)
POSITION_PHRASES: dict[str, str] = {
    "top left": "in the top left corner",
    "top": "at the top",
    "top right": "in the top right corner",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "in the bottom left corner",
    "bottom": "at the bottom",
    "bottom right": "in the bottom right corner",
}

RELATIONS: tuple[str, ...] = ("left", "right", "above", "below")
RELATION_PHRASES: dict[str, str] = {
    "left": "to the left of",
    "right": "to the right of",
    "above": "above",
    "below": "below",
}


SIDES: dict[str, int] = {"triangle": 3, "square": 4}


def number_word(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def plural(shape: str) -> str:
    return shape + "es" if shape.endswith("s") else shape + "s"
