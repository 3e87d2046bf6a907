"""Preference data for DPO: checked pairs, lazy encoding of both sides, and their batches.

The input is the preference JSONL `{id, image, prompt, chosen, rejected}` of
`sicog build-preferences` (a JSON list works too). `prepare_pairs` checks every record once,
before training, the way SFT checks its records (`sicog.data.dataset`): a line that is not JSON,
a pair that fails `sicog.curate.preferences.validate_pair`, a repeated id, a missing or unreadable
image, or a side longer than `model_max_length` after image expansion is dropped, counted and
written to the run's rejects file with the reason. An image whose header reads but whose pixels
do not decode is found when its batch is built and recorded the same way.

Both sides are the conversation `[human: prompt, gpt: answer]` encoded by the same
`SicogProcessor.encode` as SFT, with the image, so slices and image positions are exactly those
of SFT. The completion mask is the template's "assistant" label mode: the answer tokens and the
closing `<|im_end|>` of the assistant turn, nothing of the prompt, the header or the image.
A batch holds the chosen sides first, then the rejected sides in the same order.
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from sicog.curate.candidates import read_rows
from sicog.curate.preferences import validate_pair
from sicog.data.dataset import RejectLog, image_size_from_header
from sicog.data.mixture import DataEntry

logger = logging.getLogger(__name__)

COMPLETION_MASK_MODE = "assistant"


def conversation(prompt: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]


def completion_processor(processor):
    """A copy of `processor` whose labels mark only the assistant answer (and its closing `<|im_end|>`)."""
    if processor.mask_mode == COMPLETION_MASK_MODE:
        return processor
    out = copy.copy(processor)
    out.mask_mode = COMPLETION_MASK_MODE
    return out


@dataclass
class PreferencePair:
    """A checked preference record, ready to encode."""

    id: str
    prompt: str
    chosen: str
    rejected: str
    image_path: Path | None
    length: int            # the longer side, in tokens after image expansion
    entry: DataEntry

    @property
    def has_image(self) -> bool:
        return self.image_path is not None


def _check_pair(rec: dict, entry: DataEntry, processor, model_max_length: int) -> PreferencePair:
    reason = validate_pair(rec)
    if reason:
        raise ValueError(f"malformed pair: {reason}")
    path = entry.image_root / rec["image"] if rec.get("image") else None
    size = image_size_from_header(path) if path else None
    lengths = []
    for side in ("chosen", "rejected"):
        try:
            lengths.append(processor.num_tokens(conversation(rec["prompt"], rec[side]), image_size=size))
        except ValueError as e:
            raise ValueError(f"unencodable: {side}: {e}") from None
    if max(lengths) > model_max_length:
        raise ValueError(f"too long: {max(lengths)} tokens after image expansion > model_max_length "
                         f"{model_max_length}")
    return PreferencePair(str(rec["id"]), rec["prompt"], rec["chosen"], rec["rejected"], path, max(lengths), entry)


def prepare_pairs(data_path: str | Path, image_folder: str | Path | None, processor, model_max_length: int,
                  rejects: RejectLog | None = None, progress: bool = True) -> tuple[list[PreferencePair], int]:
    """(usable pairs in input order, number of records read); see the module docstring."""
    path = Path(data_path)
    if path.suffix.lower() in (".yaml", ".yml"):
        raise ValueError(f"{path}: DPO reads one preference file (JSON or JSONL), not a mixture")
    root = Path(image_folder) if image_folder else path.parent
    rejects = rejects or RejectLog(None)
    rows = read_rows(path, "preference file")
    pairs: list[PreferencePair] = []
    seen: set[str] = set()
    for i, (line, rec, error) in enumerate(tqdm(rows, desc="checking pairs", disable=not progress, mininterval=5)):
        entry = DataEntry(rec if isinstance(rec, dict) else {}, root, str(path), i)
        rid = rec.get("id") if isinstance(rec, dict) else None
        rid = str(rid) if rid is not None else f"line {line}"
        try:
            if error:
                raise ValueError(f"malformed pair: {error}")
            if rid in seen:
                raise ValueError(f"duplicate id: {rid!r} appeared earlier in the file")
            pair = _check_pair(rec, entry, processor, model_max_length)
        except ValueError as e:
            rejects.add(entry, rid, str(e), "prepare")
            continue
        seen.add(rid)
        pairs.append(pair)
    dropped = len(rows) - len(pairs)
    if dropped:
        logger.warning("dropped %d of %d preference records: %s%s", dropped, len(rows),
                       json.dumps(dict(rejects.counts)),
                       f" (details in {rejects.path})" if rejects.path else "")
    logger.info("%d preference pairs: %d with an image, %d text-only", len(pairs),
                sum(p.has_image for p in pairs), len(pairs) - sum(p.has_image for p in pairs))
    return pairs, len(rows)


class PreferenceDataset(torch.utils.data.Dataset):
    """Encodes both sides of a pair on access; an image that fails to decode gives None (a reject).

    `reference_logps` (set by `set_reference_logps`) are precomputed reference log-probabilities
    per pair, (chosen, rejected); when present each item carries them.
    """

    def __init__(self, pairs: list[PreferencePair], processor, rejects: RejectLog | None = None):
        self.pairs = list(pairs)
        self.processor = completion_processor(processor)
        self.rejects = rejects or RejectLog(None)
        self.reference_logps: list[tuple[float, float] | None] | None = None
        self._load_failed: set[int] = set()  # recorded once, not once per epoch

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def lengths(self) -> list[int]:
        return [p.length for p in self.pairs]

    @property
    def has_image(self) -> list[bool]:
        return [p.has_image for p in self.pairs]

    def set_reference_logps(self, values: list[tuple[float, float] | None]) -> None:
        if len(values) != len(self.pairs):
            raise ValueError(f"{len(values)} reference values for {len(self.pairs)} pairs")
        self.reference_logps = list(values)

    def __getitem__(self, i: int) -> dict | None:
        p = self.pairs[i]
        try:
            image = self.processor.load_image(p.image_path) if p.image_path else None
            item = {"chosen": self.processor.encode(conversation(p.prompt, p.chosen), image=image),
                    "rejected": self.processor.encode(conversation(p.prompt, p.rejected), image=image)}
        except ValueError as e:
            if i not in self._load_failed:
                self._load_failed.add(i)
                logger.warning("skipping pair %s: %s", p.id, e)
                self.rejects.add(p.entry, p.id, f"load failed: {e}", "load")
            return None
        if self.reference_logps is not None:
            ref = self.reference_logps[i]
            if ref is None:  # its image failed to load when the reference pass ran
                if i not in self._load_failed:
                    self._load_failed.add(i)
                    self.rejects.add(p.entry, p.id, "load failed: no precomputed reference log-probs", "load")
                return None
            item["ref_logps"] = torch.tensor(ref, dtype=torch.float32)
        return item


class PreferenceCollator:
    """Pads the chosen sides then the rejected sides into one batch of 2B sequences.

    Keys: input_ids, attention_mask, labels (the completion mask as labels, -100 elsewhere),
    images (2B entries) and, when precomputed, ref_logps [B, 2] (chosen, rejected).
    """

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, items: list[dict | None]) -> dict:
        kept = [x for x in items if x is not None]
        if not kept:
            # Every pair of this batch failed to load (each is in the rejects file); the trainer
            # turns an empty batch into a zero loss so that all ranks still step together.
            empty = torch.zeros(0, 0, dtype=torch.long)
            return {"input_ids": empty, "attention_mask": empty.clone(), "labels": empty.clone(), "images": []}
        batch = self.processor.collate([x["chosen"] for x in kept] + [x["rejected"] for x in kept])
        if "ref_logps" in kept[0]:
            batch["ref_logps"] = torch.stack([x["ref_logps"] for x in kept])
        return batch
