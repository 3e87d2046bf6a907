"""Drawing a scene graph with PIL, byte-for-byte reproducibly.

Shapes are polygons computed here; printed letters use PIL's built-in bitmap font (the same glyphs
on every machine), enlarged by whole-pixel nearest-neighbour scaling on big objects. PNGs are
written with fixed compression and no metadata, so the same scene always gives the same bytes.
"""
from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont

from sicog.world.vocab import BACKGROUNDS, COLOURS

PNG_COMPRESS_LEVEL = 6
_FONT = None


def _font():
    global _FONT
    if _FONT is None:
        _FONT = ImageFont.load_default_imagefont()
    return _FONT


def shape_polygon(shape: str, box: list[int]) -> list[tuple[float, float]] | None:
    """Polygon vertices of `shape` inside `box`; None for the circle (drawn as an ellipse)."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    r = (x1 - x0) / 2
    if shape == "circle":
        return None
    if shape == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        return [(cx, y0), (x1, y1 - r * 0.2), (x0, y1 - r * 0.2)]
    if shape == "cross":
        t = r * 0.36
        return [
            (cx - t, y0), (cx + t, y0), (cx + t, cy - t), (x1, cy - t), (x1, cy + t), (cx + t, cy + t),
            (cx + t, y1), (cx - t, y1), (cx - t, cy + t), (x0, cy + t), (x0, cy - t), (cx - t, cy - t),
        ]
    raise ValueError(f"unknown shape {shape!r}")


def _label_colour(colour: str) -> tuple[int, int, int]:
    r, g, b = COLOURS[colour]
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _draw_label(img: Image.Image, text: str, box: list[int], colour: str) -> None:
    font = _font()
    left, top, right, bottom = font.getbbox(text)
    glyph = Image.new("L", (right - left, bottom - top), 0)
    ImageDraw.Draw(glyph).text((-left, -top), text, fill=255, font=font)
    scale = max(1, (box[2] - box[0]) // 20)
    if scale > 1:
        glyph = glyph.resize((glyph.width * scale, glyph.height * scale), Image.Resampling.NEAREST)
    cx, cy = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
    ink = Image.new("RGB", glyph.size, _label_colour(colour))
    img.paste(ink, (cx - glyph.width // 2, cy - glyph.height // 2), glyph)


def draw_shape(draw: ImageDraw.ImageDraw, obj: dict, fill) -> None:
    """Fill the object's shape (no label) with `fill`: an RGB colour, or a class id on an "L" mask."""
    poly = shape_polygon(obj["shape"], obj["bbox"])
    if poly is None:
        draw.ellipse(obj["bbox"], fill=fill)
    else:
        draw.polygon([(round(x), round(y)) for x, y in poly], fill=fill)


def render_scene(scene: dict) -> Image.Image:
    img = Image.new("RGB", (scene["width"], scene["height"]), BACKGROUNDS[scene["background"]])
    draw = ImageDraw.Draw(img)
    for obj in scene["objects"]:
        draw_shape(draw, obj, COLOURS[obj["colour"]])
        if obj["label"]:
            _draw_label(img, obj["label"], obj["bbox"], obj["colour"])
    return img


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False)
    return buf.getvalue()
