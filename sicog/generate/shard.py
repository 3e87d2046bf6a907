"""Stable hashing of ids: derived seeds, the split over `torchrun` ranks and `i/k` input chunks.

An id belongs to chunk `h % k` and, inside its chunk, to rank `(h // k) % world`, where `h` is a
stable 64-bit hash of the id (SHA-256, not Python's per-process `hash`). The split depends only on
the id, so it survives reordering of the input and is identical on every node.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from sicog.runtime import RankInfo, rank_info  # noqa: F401  (re-exported)

_CHUNK_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def stable_hash(record_id: str) -> int:
    return int.from_bytes(hashlib.sha256(str(record_id).encode("utf-8")).digest()[:8], "little")


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from `seed` and any parts (e.g. a record id), stable across processes and machines."""
    text = "\x1f".join([str(int(seed)), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") >> 1


@dataclass(frozen=True)
class Chunk:
    """Chunk `index` of `count` (zero-based); `Chunk(0, 1)` is the whole input."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> "Chunk":
        if not text:
            return cls()
        m = _CHUNK_RE.match(text)
        if not m:
            raise ValueError(f"chunk {text!r} is not of the form i/k (e.g. 0/4)")
        i, k = int(m.group(1)), int(m.group(2))
        if k < 1 or not 0 <= i < k:
            raise ValueError(f"chunk {text!r}: need k >= 1 and 0 <= i < k (zero-based)")
        return cls(i, k)

    def contains(self, record_id: str) -> bool:
        return stable_hash(record_id) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def rank_of(record_id: str, world_size: int, chunk: Chunk = Chunk()) -> int:
    return (stable_hash(record_id) // chunk.count) % world_size


def shard_path(out: str | os.PathLike, rank: int, world_size: int) -> Path:
    """Rank `rank`'s candidates for the output `out`: `OUT.rank{r}-of-{w}.jsonl`."""
    return Path(f"{os.fspath(out)}.rank{rank}-of-{world_size}.jsonl")


def shard_glob(out: str | os.PathLike) -> str:
    """Every shard of `out`, whatever the world size (rejects files included)."""
    return f"{os.fspath(out)}.rank*-of-*.jsonl"


def rejects_path(path: str | os.PathLike) -> Path:
    """The rejects file beside a candidates file or shard: `x.jsonl` -> `x.rejects.jsonl`."""
    p = Path(path)
    base = p.with_suffix("") if p.suffix in (".jsonl", ".json") else p
    return base.with_name(f"{base.name}.rejects.jsonl")
