"""Modality-length grouped batch sampler.

Image samples and text-only samples are batched separately (a batch never mixes them), and
within each modality samples of similar length share a batch: the shuffled indices are cut into
mega-batches of `batch_size * world_size * mega_batch_mult`, each mega-batch is sorted by length
and cut into per-device batches. Consecutive groups of `world_size` batches (one optimizer
micro-step across ranks) come from the same mega-batch, so ranks get similar lengths, and every
group holds exactly `world_size` batches of one modality: the remainder of a modality is spread over
all ranks in smaller batches (its samples repeated only when fewer than `world_size` are left), so
that no short group shifts the rank alignment of the groups after it. These groups are shuffled, and the group holding the longest sample goes first so that an out-of-memory shows
at step one.

The sampler yields the global sequence of per-device batches; batch i goes to rank
i % world_size (what accelerate's BatchSamplerShard does when the Trainer prepares the loader).
The order depends only on (lengths, modalities, seed, epoch).
"""
from __future__ import annotations

import math
import random
from typing import Iterator, Sequence


class ModalityLengthGroupedSampler:
    def __init__(self, lengths: Sequence[int], has_image: Sequence[bool], batch_size: int,
                 world_size: int = 1, seed: int = 0, mega_batch_mult: int = 8):
        if len(lengths) != len(has_image):
            raise ValueError(f"{len(lengths)} lengths but {len(has_image)} modality flags")
        if batch_size < 1 or world_size < 1 or mega_batch_mult < 1:
            raise ValueError("batch_size, world_size and mega_batch_mult must be positive")
        self.lengths = list(lengths)
        self.has_image = [bool(x) for x in has_image]
        # Deliberately not named `batch_size`: accelerate then treats the batches as variable-sized
        # and never drops or regroups a short last batch of a modality.
        self.per_device_batch = batch_size
        self.world_size = world_size
        self.seed = seed
        self.mega = batch_size * world_size * mega_batch_mult
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _modality_groups(self, indices: list[int], rng: random.Random) -> list[list[list[int]]]:
        rng.shuffle(indices)
        groups = []
        for start in range(0, len(indices), self.mega):
            mega = sorted(indices[start:start + self.mega], key=lambda i: -self.lengths[i])
            n = self._batches_in(len(mega))
            if len(mega) < n:  # fewer samples than ranks: repeat some so that no rank gets nothing
                mega = (mega * n)[:n]
            size, extra = divmod(len(mega), n)
            cuts = [j * size + min(j, extra) for j in range(n + 1)]
            batches = [mega[cuts[j]:cuts[j + 1]] for j in range(n)]
            groups.extend(batches[j:j + self.world_size] for j in range(0, len(batches), self.world_size))
        return groups

    def batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        image = [i for i, m in enumerate(self.has_image) if m]
        text = [i for i, m in enumerate(self.has_image) if not m]
        groups = self._modality_groups(image, rng) + self._modality_groups(text, rng)
        rng.shuffle(groups)
        if groups:
            longest = max(range(len(groups)), key=lambda g: max(self.lengths[i] for b in groups[g] for i in b))
            groups.insert(0, groups.pop(longest))
        return [batch for group in groups for batch in group]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def _batches_in(self, n_samples: int) -> int:
        """Per-device batches for one mega-batch: enough for its samples, a multiple of world_size."""
        return math.ceil(math.ceil(n_samples / self.per_device_batch) / self.world_size) * self.world_size

    def __len__(self) -> int:
        total = 0
        for n in (sum(self.has_image), len(self.has_image) - sum(self.has_image)):
            full, rest = divmod(n, self.mega)
            total += full * self._batches_in(self.mega) + (self._batches_in(rest) if rest else 0)
        return total


def padding_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of pad positions when each batch is padded to its longest sample."""
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    real = sum(lengths[i] for b in batches for i in b)
    return 1.0 - real / padded if padded else 0.0
