"""Reading a caption back into the world's terms: mentioned objects, their sizes and labels, counts.

The parser knows the world's vocabulary only: an object mention is a colour word followed by a
shape word (`red circle`, `red circles`), optionally preceded by a size word and followed by
`(marked) with the letter K` / `with the digit 7`. A stated total is `<number> objects|shapes`.
It does not understand negation ("there is no red circle" mentions a red circle).
"""
from __future__ import annotations

import re

from sicog.world.vocab import COLOURS, NUMBER_WORDS, SHAPES, SIZE_WORDS

_SIZE_ALIASES = {word: size for size, word in SIZE_WORDS.items()}
_SIZE_ALIASES.update({size: size for size in SIZE_WORDS})
_SIZE_ALIASES.update({"big": "large", "medium sized": "medium", "tiny": "small"})

_alt = lambda words: "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))  # noqa: E731

_OBJECT_RE = re.compile(
    rf"\b(?:(?P<size>{_alt(_SIZE_ALIASES)})\s+)?(?P<colour>{_alt(COLOURS)})\s+(?P<shape>{_alt(SHAPES)})(?:e?s)?\b"
    rf"(?:\s+(?:marked\s+)?with\s+(?:the\s+|a\s+)?(?P<kind>letter|digit|number)\s+(?P<label>[A-Za-z0-9])\b)?",
    re.IGNORECASE,
)
_COUNT_RE = re.compile(
    rf"\b(?P<n>\d+|{_alt(NUMBER_WORDS)})\s+(?:objects?|shapes?)\b", re.IGNORECASE,
)


def parse_number(token: str) -> int | None:
    token = token.lower()
    if token.isdigit():
        return int(token)
    return NUMBER_WORDS.index(token) if token in NUMBER_WORDS else None


def parse_caption(text: str) -> dict:
    """`{"objects": {"red circle": {"size": str|None, "label": str|None}}, "count": int|None}`.

    Objects are keyed by `"<colour> <shape>"` in order of first mention; a later mention fills in a
    size or label the first one lacked. `count` is the first stated total of objects or shapes.
    """
    objects: dict[str, dict] = {}
    for m in _OBJECT_RE.finditer(text or ""):
        key = f"{m['colour'].lower()} {m['shape'].lower()}"
        size = _SIZE_ALIASES[m["size"].lower()] if m["size"] else None
        label = m["label"].upper() if m["label"] else None
        entry = objects.setdefault(key, {"size": None, "label": None})
        entry["size"] = entry["size"] or size
        entry["label"] = entry["label"] or label
    count = None
    m = _COUNT_RE.search(text or "")
    if m:
        count = parse_number(m["n"])
    return {"objects": objects, "count": count}
