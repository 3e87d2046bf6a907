"""Images as data URLs whose MIME type comes from the file's bytes, never from its extension."""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Callable

# (magic-byte test, MIME type); the formats vision chat endpoints accept.
_SIGNATURES: tuple[tuple[Callable[[bytes], bool], str], ...] = (
    (lambda b: b.startswith(b"\x89PNG\r\n\x1a\n"), "image/png"),
    (lambda b: b.startswith(b"\xff\xd8\xff"), "image/jpeg"),
    (lambda b: b[:6] in (b"GIF87a", b"GIF89a"), "image/gif"),
    (lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP", "image/webp"),
)


def sniff_image_mime(data: bytes) -> str | None:
    """The MIME type of an image from its leading bytes, or None when it is not a supported image."""
    for test, mime in _SIGNATURES:
        if test(data):
            return mime
    return None


def image_data_url(path: str | Path) -> str:
    """`data:<mime>;base64,...` for the image at `path`.

    Raises FileNotFoundError when the file is missing and ValueError when its bytes are not a
    PNG, JPEG, GIF or WebP image.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image not found: {p}")
    data = p.read_bytes()
    mime = sniff_image_mime(data)
    if mime is None:
        raise ValueError(f"not a PNG, JPEG, GIF or WebP image: {p}")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
