"""The supervised training dataset: checked records, lengths after image expansion, lazy encoding.

`prepare_samples` checks every record once before training, cheaply: conversations present,
the image file readable as an image (size from its header, no full decode), and the length after
image expansion within `model_max_length`. A record that fails is dropped, counted, and written
to the rejects file with the reason; it is never truncated and never replaced by another record.
An image whose header reads but whose pixels do not decode is found when its batch is built: the
dataset returns None for it, the collator leaves it out, and it is recorded the same way.

Six-slice augmentation (`regrid_prob`, on in the paper profile): as in the authors' training
script, a fraction of the images that would not give 6 slices are resized to the area of 6 slices
before slicing. Which images is decided once per record from the seed and the record id, so the
lengths checked here are the lengths trained on, and a resumed run picks the same images.
"""
from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from tqdm import tqdm

from sicog.data import record_cache
from sicog.data.mixture import DataEntry
from sicog.data.records import dumps, record_id
from sicog.data.regrid import regrid_size

logger = logging.getLogger(__name__)

REJECTS_NAME = "rejects.jsonl"


class RejectLog:
    """Appends one JSON line per rejected record: id, source file, index, phase and reason.

    Appends are single short writes in append mode, so several ranks or workers may share a file.
    """

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self.counts: Counter[str] = Counter()

    def add(self, entry: DataEntry | None, rid: str, reason: str, phase: str) -> None:
        self.counts[reason.split(":", 1)[0]] += 1
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rec = {"id": rid, "source": entry.source if entry else None, "index": entry.index if entry else None,
               "phase": phase, "reason": reason}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(dumps(rec) + "\n")


@dataclass
class Sample:
    """A checked record, ready to encode."""

    id: str
    conversations: list[dict]
    image_path: Path | None
    length: int
    entry: DataEntry
    regrid_to: tuple[int, int] | None = None      # resize the image to this size first (six-slice augmentation)

    @property
    def has_image(self) -> bool:
        return self.image_path is not None


def image_size_from_header(path: Path) -> tuple[int, int]:
    """(W, H) read from the image header; raises ValueError with the reason when unreadable."""
    if not path.is_file():
        raise ValueError(f"missing image: {path}")
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as e:  # PIL raises several types for unreadable files
        raise ValueError(f"corrupt image: {path} ({type(e).__name__}: {e})") from None
    if w < 1 or h < 1:
        raise ValueError(f"corrupt image: {path} has size {w}x{h}")
    return w, h


REGRID_SLICES = 6


def _regrid(processor, size: tuple[int, int], rid: str, regrid_prob: float, seed: int) -> tuple[int, int] | None:
    """The size to resize this record's image to, or None (the image keeps its size)."""
    if regrid_prob <= 0 or random.Random(f"{seed}:{rid}").random() >= regrid_prob:
        return None
    lay = processor.layout
    grid = lay.grid(size)
    if grid is not None and grid[0] * grid[1] == REGRID_SLICES:
        return None
    return regrid_size(*size, REGRID_SLICES, lay.image_scale)


def _record_parts(entry: DataEntry, require_image: bool) -> tuple[list[dict], Path | None]:
    """The record's conversations and image path (no file opened); ValueError with the reason."""
    rec = entry.record
    conv = rec.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise ValueError("no conversations: the record has no non-empty `conversations` list")
    if not any(isinstance(t, dict) and t.get("from") == "gpt" for t in conv):
        raise ValueError("no conversations: no `gpt` turn to learn from")
    image = rec.get("image")
    if isinstance(image, list):
        if len(image) != 1:
            raise ValueError(f"multiple images: {len(image)} images in one record are not supported")
        image = image[0]
    if require_image and not image:
        raise ValueError("text-only: this stage trains only the projector, which a record without an image "
                         "cannot train")
    return conv, (entry.image_root / image if image else None)


def _check_record(entry: DataEntry, processor, model_max_length: int, require_image: bool,
                  rid: str = "", regrid_prob: float = 0.0,
                  seed: int = 0) -> tuple[list[dict], Path | None, int, tuple[int, int] | None]:
    conv, path = _record_parts(entry, require_image)
    size = image_size_from_header(path) if path else None
    regrid_to = _regrid(processor, size, rid, regrid_prob, seed) if size else None
    size = regrid_to or size
    try:
        length = processor.num_tokens(conv, image_size=size)
    except ValueError as e:
        raise ValueError(f"unencodable: {e}") from None
    if length > model_max_length:
        raise ValueError(f"too long: {length} tokens after image expansion > model_max_length {model_max_length}")
    return conv, path, length, regrid_to


def prepare_samples(entries: Sequence[DataEntry], processor, model_max_length: int,
                    rejects: RejectLog | None = None, progress: bool = True,
                    require_image: bool = False, regrid_prob: float = 0.0, seed: int = 0,
                    cache_dir: str | os.PathLike | None = None) -> list[Sample]:
    """Check every entry (see the module docstring); returns the usable samples in input order.

    `require_image` drops text-only records (for projector-only stages, which they cannot train).
    `regrid_prob`: the fraction of images given the six-slice augmentation (decided by `seed`).
    `cache_dir`: where the checks' outcomes are cached (`sicog.data.record_cache`; None: no cache).
    With several ranks this is collective: the ranks split the checks and share the outcomes.
    """
    if not 0 <= regrid_prob <= 1:
        raise ValueError(f"regrid_prob must be in [0, 1], got {regrid_prob}")
    if regrid_prob and (processor.layout.projector_type != "resampler" or processor.layout.max_slices < REGRID_SLICES):
        raise ValueError(f"regrid_prob needs a slicing layout with max_slices >= {REGRID_SLICES} "
                         f"(this one: {processor.layout.projector_type}, max_slices {processor.layout.max_slices})")
    rejects = rejects or RejectLog(None)
    ids = [record_id(entry.record, i) for i, entry in enumerate(entries)]

    def check(i: int):
        try:
            _, _, length, regrid_to = _check_record(entries[i], processor, model_max_length, require_image,
                                                    ids[i], regrid_prob, seed)
        except ValueError as e:
            return str(e)
        return [length, list(regrid_to) if regrid_to else None]

    settings = {"model_max_length": model_max_length, "require_image": require_image,
                "regrid_prob": regrid_prob, "seed": seed}
    key = record_cache.cache_key(entries, processor, settings) if cache_dir is not None else None
    bar = lambda idx: tqdm(idx, desc="checking records", disable=not progress, mininterval=5)  # noqa: E731
    outcomes, _ = record_cache.cached_outcomes(entries, check, key, Path(cache_dir) if cache_dir else None, bar)
    samples: list[Sample] = []
    for entry, rid, outcome in zip(entries, ids, outcomes):
        if isinstance(outcome, str):
            rejects.add(entry, rid, outcome, "prepare")
            continue
        conv, path = _record_parts(entry, require_image)
        length, regrid_to = outcome
        samples.append(Sample(rid, conv, path, length, entry, tuple(regrid_to) if regrid_to else None))
    dropped = len(entries) - len(samples)
    if dropped:
        logger.warning("dropped %d of %d records: %s%s", dropped, len(entries),
                       json.dumps(dict(rejects.counts)),
                       f" (details in {rejects.path})" if rejects.path else "")
    logger.info("%d training samples: %d with an image, %d text-only", len(samples),
                sum(s.has_image for s in samples), sum(not s.has_image for s in samples))
    if regrid_prob:
        logger.info("six-slice augmentation: %d of %d images resized to the area of %d slices (regrid_prob %g)",
                    sum(s.regrid_to is not None for s in samples), sum(s.has_image for s in samples),
                    REGRID_SLICES, regrid_prob)
    return samples


class SupervisedDataset(torch.utils.data.Dataset):
    """Encodes samples on access; an image that fails to decode gives None (recorded as a reject)."""

    def __init__(self, samples: Sequence[Sample], processor, rejects: RejectLog | None = None):
        self.samples = list(samples)
        self.processor = processor
        self.rejects = rejects or RejectLog(None)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def lengths(self) -> list[int]:
        return [s.length for s in self.samples]

    @property
    def has_image(self) -> list[bool]:
        return [s.has_image for s in self.samples]

    def __getitem__(self, i: int) -> dict | None:
        s = self.samples[i]
        try:
            image = self.processor.load_image(s.image_path) if s.image_path else None
            if image is not None and s.regrid_to is not None:
                image = image.resize(s.regrid_to, Image.Resampling.BICUBIC)
            return self.processor.encode(s.conversations, image=image)
        except ValueError as e:
            logger.warning("skipping sample %s: %s", s.id, e)
            self.rejects.add(s.entry, s.id, f"load failed: {e}", "load")
            return None
