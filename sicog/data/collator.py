"""Batches for training: pads with the processor and leaves out samples the dataset skipped."""
from __future__ import annotations

import torch


class TrainCollator:
    def __init__(self, processor, padding_side: str = "right"):
        self.processor = processor
        self.padding_side = padding_side

    def __call__(self, items: list[dict | None]) -> dict:
        kept = [x for x in items if x is not None]
        if not kept:
            # Every sample of this batch failed to load (each is in the rejects file). The trainer
            # turns an empty batch into a zero loss so that all ranks still step together.
            empty = torch.zeros(0, 0, dtype=torch.long)
            return {"input_ids": empty, "attention_mask": empty.clone(), "labels": empty.clone(), "images": []}
        return self.processor.collate(kept, padding_side=self.padding_side)
