"""Batched greedy generation for evaluation: load and resize images, encode, left-pad, decode."""
from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from PIL import Image

from sicog.data.tokens import IM_END
from sicog.evaluate.settings import EvalConfig
from sicog.model.layout import ImageLayout
from sicog.model.precision import autocast
from sicog.runtime import to_device


class RecordError(ValueError):
    """A record that cannot be evaluated; `category` is the short reason counted in the scores."""

    def __init__(self, category: str, detail: str):
        super().__init__(f"{category}: {detail}")
        self.category = category
        self.detail = detail


def with_long_side(processor, long_side):
    """A shallow copy of `processor` whose generation-time long-side resize is `long_side`.

    "checkpoint" keeps the checkpoint's own `eval_long_side` (the processor is returned as is).
    """
    if long_side == "checkpoint":
        return processor
    out = copy.copy(processor)
    out.layout = ImageLayout.from_dict({**processor.layout.to_dict(), "eval_long_side": long_side})
    return out


class GreedyGenerator:
    """Runs a SICOG model and processor with the pinned decoding settings of an EvalConfig.

    Images are resized to the long side of the config (or of the checkpoint) by the processor
    itself, through its generation-time path (`for_generation=True`).
    """

    def __init__(self, model, processor, cfg: EvalConfig, device: str | torch.device | None = None,
                 precision: str = "fp32"):
        self.model = model.eval()
        self.processor = with_long_side(processor, cfg.long_side)
        self.long_side = self.processor.layout.eval_long_side
        self.cfg = cfg
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)
        self.precision = precision
        autocast(precision, self.device)  # fp32 | bf16 (a resolved precision), checked here
        self.new_tokens = 0
        self.seconds = 0.0

    def load_image(self, path: str | Path) -> Image.Image:
        """The image at `path`; RecordError when missing or unreadable."""
        p = Path(path)
        if not p.is_file():
            raise RecordError("missing image", str(p))
        try:
            image = self.processor.load_image(p)
        except ValueError as e:  # sicog.model.processing.ImageLoadError
            raise RecordError("unreadable image", f"{p}: {e}") from None
        return image

    def encode(self, prompt: str, image: Image.Image | None) -> dict:
        """One generation input; RecordError when the processor rejects it."""
        conversation = [{"from": "human", "value": prompt}]
        try:
            return self.processor.encode(conversation, image=image, add_generation_prompt=True, for_generation=True)
        except ValueError as e:
            raise RecordError("unencodable", str(e)) from None

    @torch.inference_mode()
    def generate(self, items: list[dict], benchmark: str) -> list[str]:
        """Greedy completions for encoded items (left-padded into one batch), decoded without specials."""
        batch = self.processor.collate(items, padding_side="left")
        batch = to_device(batch, self.device)
        kwargs = {k: batch[k] for k in ("input_ids", "attention_mask", "images") if k in batch}
        pad_id = self.processor.tokenizer.pad_token_id
        eos_id = self.processor.tokenizer.convert_tokens_to_ids(IM_END)
        start = time.perf_counter()
        with autocast(self.precision, self.device):  # generate() scores in fp32 under autocast too
            out = self.model.generate(
                **kwargs, **self.cfg.generation_kwargs(benchmark), pad_token_id=pad_id, eos_token_id=eos_id
            )
        self.seconds += time.perf_counter() - start
        new = out[:, batch["input_ids"].shape[1]:]
        self.new_tokens += int((new != pad_id).sum()) if pad_id is not None else new.numel()
        texts = self.processor.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [t.strip() for t in texts]

    def throughput(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0
