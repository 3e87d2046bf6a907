"""A cache of the per-record checks (length after image expansion, six-slice resize, or the reason
a record is rejected), so that a restart opens no image header and tokenizes nothing.

At paper scale the checks cost ~0.35 ms a record: minutes per rank at 665K records, repeated on
every start and, without this, on every rank. Here

- the cache file is keyed by a SHA-256 over the content of every data file the entries come from,
  which entries are used (source, index, image folder), the processor's settings (layout, mean/std,
  separators, masking), the tokenizer (its full serialisation and chat template) and the check
  settings (model_max_length, require_image, regrid_prob, seed); any change gives a new key and
  so a fresh check;
- with several ranks, the ranks agree first (one gather) whether every rank can read the cache;
  if not, each rank checks every world_size-th record, the results are gathered to all ranks, and
  the first rank of each node writes the file (atomically; on a shared filesystem several nodes
  write the same content). So a cold start costs 1/world_size of the checks per rank.

Images edited in place under the same names are not noticed (their content is not hashed: that
would read every image, the cost this cache avoids); delete the cache folder after such a change.
The folder is `$SICOG_CACHE_DIR/record-checks` (default `~/.cache/sicog/record-checks`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from sicog.data.records import atomic_write_text
from sicog.runtime import rank_info

logger = logging.getLogger(__name__)

VERSION = 1
Outcome = Any  # [length, regrid (w, h) or None] for a usable record, or the reject reason (a str)


def default_cache_dir() -> Path:
    root = os.environ.get("SICOG_CACHE_DIR") or Path.home() / ".cache" / "sicog"
    return Path(root) / "record-checks"


def _file_digest(path: str, memo: dict[str, str]) -> str:
    if path not in memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        memo[path] = h.hexdigest()
    return memo[path]


def processor_fingerprint(processor) -> str:
    """Everything in the processor that changes a record's token count."""
    tok = processor.tokenizer
    backend = getattr(tok, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(sorted(tok.get_vocab().items()))
    parts = {"processor": processor.to_dict(), "tokenizer": hashlib.sha256(vocab.encode()).hexdigest(),
             "chat_template": getattr(tok, "chat_template", None), "tokenizer_class": type(tok).__name__}
    return json.dumps(parts, sort_keys=True, default=str)


def cache_key(entries: Sequence, processor, settings: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"version": VERSION, "settings": settings}, sort_keys=True).encode())
    h.update(processor_fingerprint(processor).encode())
    memo: dict[str, str] = {}
    for source in sorted({e.source for e in entries}):
        h.update(f"{source}\0{_file_digest(source, memo)}\0".encode())
    h.update(json.dumps([(e.source, e.index, str(e.image_root)) for e in entries]).encode())
    return h.hexdigest()


def load(cache_dir: Path, key: str, n: int) -> list[Outcome] | None:
    path = cache_dir / f"{key}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    outcomes = data.get("outcomes") if isinstance(data, dict) else None
    if not isinstance(outcomes, list) or data.get("key") != key or len(outcomes) != n:
        logger.warning("record-check cache %s is not for these records; checking again", path)
        return None
    return outcomes


def save(cache_dir: Path, key: str, outcomes: list[Outcome]) -> None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache_dir / f"{key}.json",
                          json.dumps({"version": VERSION, "key": key, "outcomes": outcomes}, separators=(",", ":")))
    except OSError as e:  # a read-only home: train on, without a cache
        logger.warning("could not write the record-check cache in %s (%s); the next start checks again", cache_dir, e)


def _dist():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


def cached_outcomes(entries: Sequence, check: Callable[[int], Outcome], key: str | None,
                    cache_dir: Path | None, progress: Callable[[Sequence[int]], Sequence[int]] = lambda x: x
                    ) -> tuple[list[Outcome], bool]:
    """(outcome of `check(i)` for every entry, whether they came from the cache).

    `key`/`cache_dir` None: no cache. Collective when a process group of several ranks exists:
    every rank must call it.
    """
    n = len(entries)
    outcomes = load(cache_dir, key, n) if key and cache_dir else None
    dist = _dist()
    if dist is not None:
        flags: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(flags, outcomes is not None)
        if not all(flags):
            outcomes = None
    if outcomes is not None:
        logger.info("record checks read from the cache %s (%d records, no image opened)",
                    cache_dir / f"{key}.json", n)
        return outcomes, True
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist is not None else (0, 1)
    mine = range(rank, n, world)
    local = [check(i) for i in progress(mine)]
    if dist is None:
        outcomes = local
    else:
        parts: list[Any] = [None] * world
        dist.all_gather_object(parts, local)
        outcomes = [None] * n
        for r, part in enumerate(parts):
            outcomes[r::world] = part
    if key and cache_dir and rank_info().local_rank == 0:
        save(cache_dir, key, outcomes)
    return outcomes, False
