"""Training data sources: one LLaVA JSON/JSONL file, or a mixture YAML of several.

A mixture YAML is a list of entries (or a mapping with a `datasets:` list), each with:

    json_path: captions.jsonl          # relative paths resolve against the YAML's folder
    image_folder: images               # optional; default: --image-folder, else the JSON file's folder
    sampling_strategy: all             # all | first:N | end:N | random:N | N%
                                       # (N a count or a percentage such as 10%; bare N% = random:N%)

Sampling is seeded, so a mixture resolves to the same records on every rank and every run.
"""
from __future__ import annotations

import logging
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from sicog.data.records import read_records

logger = logging.getLogger(__name__)

MIXTURE_SUFFIXES = (".yaml", ".yml")
_STRATEGY_RE = re.compile(r"^(?:(first|end|random):)?(\d+(?:\.\d+)?)(%?)$")


@dataclass
class DataEntry:
    """One raw record with where it came from and where its image lives."""

    record: dict
    image_root: Path
    source: str
    index: int


def sample_indices(n: int, strategy: str, seed: int) -> list[int]:
    """Indices of the records kept by `strategy` out of `n` (see the module docstring)."""
    strategy = (strategy or "all").strip()
    if strategy == "all":
        return list(range(n))
    m = _STRATEGY_RE.match(strategy)
    if not m or (m.group(1) is None and not m.group(3)):
        raise ValueError(f"bad sampling_strategy {strategy!r}; use all, first:N, end:N, random:N or N%")
    kind = m.group(1) or "random"
    amount = float(m.group(2))
    if m.group(3):
        if amount > 100:
            raise ValueError(f"bad sampling_strategy {strategy!r}: more than 100%")
        k = math.ceil(n * amount / 100)
    else:
        if amount != int(amount):
            raise ValueError(f"bad sampling_strategy {strategy!r}: a count must be a whole number")
        k = int(amount)
    if k > n:
        logger.warning("sampling_strategy %s asks for %d records but only %d exist; taking all", strategy, k, n)
        k = n
    if kind == "first":
        return list(range(k))
    if kind == "end":
        return list(range(n - k, n))
    return sorted(random.Random(seed).sample(range(n), k))


def load_data(data_path: str | Path, image_folder: str | Path | None = None, seed: int = 0) -> list[DataEntry]:
    """The training records of a JSON/JSONL file or a mixture YAML, with their image roots."""
    path = Path(data_path)
    if not path.exists():
        raise FileNotFoundError(f"no such data file: {path}")
    if path.suffix.lower() not in MIXTURE_SUFFIXES:
        root = Path(image_folder) if image_folder else path.parent
        return [DataEntry(r, root, str(path), i) for i, r in enumerate(read_records(path))]

    spec = yaml.safe_load(path.read_text()) or []
    if isinstance(spec, dict):
        spec = spec.get("datasets")
    if not isinstance(spec, list) or not spec:
        raise ValueError(f"{path}: a mixture is a non-empty list of entries (or `datasets:` holding one)")
    entries: list[DataEntry] = []
    for k, item in enumerate(spec):
        if not isinstance(item, dict) or not item.get("json_path"):
            raise ValueError(f"{path}: entry {k} has no json_path")
        unknown = set(item) - {"json_path", "image_folder", "sampling_strategy"}
        if unknown:
            raise ValueError(f"{path}: entry {k} has unknown keys {sorted(unknown)}")
        json_path = (path.parent / item["json_path"]).resolve()
        if item.get("image_folder"):
            root = (path.parent / item["image_folder"]).resolve()
        else:
            root = Path(image_folder) if image_folder else json_path.parent
        records = read_records(json_path)
        keep = sample_indices(len(records), str(item.get("sampling_strategy", "all")), seed + k)
        entries.extend(DataEntry(records[i], root, str(json_path), i) for i in keep)
        logger.info("mixture entry %d: %s: %d of %d records (%s)", k, json_path, len(keep), len(records),
                    item.get("sampling_strategy", "all"))
    return entries
