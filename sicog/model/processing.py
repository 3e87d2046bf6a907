"""`SicogProcessor`: images to `ImageInput`, conversations to ids and labels, batches.

The processor writes, in place of `<image>`, exactly the positions the model fills
(`ImageLayout.expand`, the function the model checks against). Text follows the `qwen_1_5` chat
template of `sicog.data.template`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from sicog.data.template import IGNORE_INDEX, IMAGE, MASK_MODES, count_chat_tokens, encode_chat, validate_conversations

from .configuration import CLIP_MEAN, CLIP_STD
from .image_input import ImageInput
from .layout import ImageLayout
from .slicing import resize_long_side, slice_image

PROCESSOR_CONFIG = "processor_config.json"


class ImageLoadError(ValueError):
    """An image file that cannot be used (missing, empty, corrupt, zero-size)."""


class SicogProcessor:
    """Tokenizer + image settings of a SICOG model.

    `encode(conversations, image)` gives one record's input_ids/labels/ImageInput,
    `num_tokens(conversations, image_size)` its length without building tensors, `collate(items)`
    a padded batch. `mask_mode` picks the label masking ("authors" or "assistant", see
    `sicog.data.template`). Saved as the tokenizer files plus `processor_config.json`.
    """

    def __init__(self, tokenizer, layout: ImageLayout | dict | None = None, image_mean=None, image_std=None,
                 row_separator: str = "\n", overview_separator: str = ",",
                 separator_token_ids: list[int] | None = None, mask_mode: str = "authors"):
        if mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {mask_mode!r}")
        self.tokenizer = tokenizer
        self.layout = layout if isinstance(layout, ImageLayout) else ImageLayout.from_dict(layout or {})
        self.image_mean = list(image_mean or CLIP_MEAN)
        self.image_std = list(image_std or CLIP_STD)
        self.row_separator = row_separator
        self.overview_separator = overview_separator
        self.separator_token_ids = list(separator_token_ids) if separator_token_ids is not None else None
        self.mask_mode = mask_mode
        self.image_token_id = self._special_id(IMAGE)
        if self.separator_token_ids is not None:
            if len(self.separator_token_ids) != 2:
                raise ValueError(f"separator_token_ids must be [row_id, overview_id], got {self.separator_token_ids}")
            self.row_id, self.overview_id = self.separator_token_ids
        else:
            self.row_id = self._single_id(row_separator)
            self.overview_id = self._single_id(overview_separator)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_token_id is None:
            raise ValueError("the tokenizer has neither a pad token nor an eos token")
        self._mean = torch.tensor(self.image_mean).view(3, 1, 1)
        self._std = torch.tensor(self.image_std).view(3, 1, 1)

    # --- construction / persistence -------------------------------------------------------
    @classmethod
    def from_config(cls, config, tokenizer, mask_mode: str = "authors") -> "SicogProcessor":
        return cls(tokenizer, config.layout, config.image_mean, config.image_std, config.row_separator,
                   config.overview_separator, config.separator_token_ids, mask_mode)

    def to_dict(self) -> dict:
        return {
            "processor_class": type(self).__name__,
            "layout": self.layout.to_dict(),
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "row_separator": self.row_separator,
            "overview_separator": self.overview_separator,
            "separator_token_ids": self.separator_token_ids,
            "mask_mode": self.mask_mode,
        }

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> list[str]:
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        files = list(self.tokenizer.save_pretrained(str(out)))
        (out / PROCESSOR_CONFIG).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return files + [str(out / PROCESSOR_CONFIG)]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, mask_mode: str | None = None,
                        **kwargs) -> "SicogProcessor":
        from transformers import AutoTokenizer

        path = Path(pretrained_model_name_or_path)
        cfg_file = path / PROCESSOR_CONFIG
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{cfg_file} not found: not a SICOG processor folder")
        cfg = json.loads(cfg_file.read_text())
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
        return cls(tokenizer, cfg.get("layout"), cfg.get("image_mean"), cfg.get("image_std"),
                   cfg.get("row_separator", "\n"), cfg.get("overview_separator", ","),
                   cfg.get("separator_token_ids"), mask_mode or cfg.get("mask_mode", "authors"))

    def _special_id(self, token: str) -> int:
        tid = self.tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == self.tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {token!r} token")
        return tid

    def _single_id(self, text: str) -> int:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"separator {text!r} is {len(ids)} tokens in this tokenizer; set separator_token_ids")
        return ids[0]

    # --- images ---------------------------------------------------------------------------
    @staticmethod
    def load_image(path: str | os.PathLike) -> Image.Image:
        """The image at `path` as PIL RGB; ImageLoadError with the reason when it cannot be used."""
        p = Path(path)
        if not p.is_file():
            raise ImageLoadError(f"image not found: {p}")
        if p.stat().st_size == 0:
            raise ImageLoadError(f"image file is empty: {p}")
        try:
            with Image.open(p) as im:
                im.load()
                image = im.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ImageLoadError(f"cannot decode image {p}: {e}") from e
        if image.width == 0 or image.height == 0:
            raise ImageLoadError(f"image has zero size: {p}")
        return image

    def to_tensor(self, image: Image.Image) -> torch.Tensor:
        arr = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (arr - self._mean) / self._std

    def pad_to_square(self, image: Image.Image) -> Image.Image:
        """Centre the image on a square canvas of the mean colour (LLaVA-1.5's low-res "pad" mode)."""
        w, h = image.size
        if w == h:
            return image
        side = max(w, h)
        fill = tuple(int(round(m * 255)) for m in self.image_mean)
        canvas = Image.new("RGB", (side, side), fill)
        canvas.paste(image, ((side - w) // 2, (side - h) // 2))
        return canvas

    def preprocess(self, image: Image.Image | str | os.PathLike, for_generation: bool = False) -> ImageInput:
        """PIL image (or path) -> ImageInput (overview, slices, grid) for this processor's layout."""
        if not isinstance(image, Image.Image):
            image = self.load_image(image)
        if image.mode != "RGB":
            image = image.convert("RGB")
        lay = self.layout
        if lay.projector_type == "mlp":
            return ImageInput(self.to_tensor(self.pad_to_square(image).resize(
                (lay.image_scale, lay.image_scale), Image.Resampling.BICUBIC)))
        if for_generation and lay.eval_long_side:
            image = resize_long_side(image, lay.eval_long_side)
        overview, slices, grid = slice_image(image, lay.max_slices, lay.image_scale, lay.patch_size)
        if grid is None:
            return ImageInput(self.to_tensor(overview))
        return ImageInput(self.to_tensor(overview), torch.stack([self.to_tensor(s) for s in slices]), grid)

    # --- text -----------------------------------------------------------------------------
    @staticmethod
    def _check_image_marker(conversations, has_image: bool) -> None:
        n = sum(turn["value"].count(IMAGE) for turn in conversations)
        if n > 1:
            raise ValueError(f"a record may hold at most one {IMAGE}, found {n}")
        if has_image and n == 0:
            raise ValueError(f"an image was given but no human turn contains {IMAGE}")
        if not has_image and n == 1:
            raise ValueError(f"the text contains {IMAGE} but no image was given")

    def encode(self, conversations, image=None, add_generation_prompt: bool = False,
               for_generation: bool = False) -> dict:
        """{"input_ids", "labels": LongTensor[T], "images": ImageInput | None} for one record."""
        validate_conversations(conversations, add_generation_prompt)
        self._check_image_marker(conversations, image is not None)
        ids, labels = encode_chat(self.tokenizer, conversations, self.mask_mode, add_generation_prompt)
        image_input = None
        if image is not None:
            image_input = self.preprocess(image, for_generation)
            pos = ids.index(self.image_token_id)
            expanded = self.layout.expand(image_input.grid, self.image_token_id, self.row_id, self.overview_id)
            ids = ids[:pos] + expanded + ids[pos + 1:]
            labels = labels[:pos] + [IGNORE_INDEX] * len(expanded) + labels[pos + 1:]
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "images": image_input,
        }

    def num_tokens(self, conversations, image_size: tuple[int, int] | None = None,
                   add_generation_prompt: bool = False, for_generation: bool = False) -> int:
        """len(encode(...)["input_ids"]) from the image size alone, without building tensors."""
        validate_conversations(conversations, add_generation_prompt)
        self._check_image_marker(conversations, image_size is not None)
        n = count_chat_tokens(self.tokenizer, conversations, add_generation_prompt)
        if image_size is not None:
            n += self.layout.num_positions(self.layout.grid(tuple(image_size), for_generation)) - 1
        return n

    def collate(self, items: list[dict], padding_side: str = "right") -> dict:
        """Pad encoded items into a batch; "left" padding for generation."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if not items:
            raise ValueError("cannot collate an empty batch")
        longest = max(len(it["input_ids"]) for it in items)
        ids = torch.full((len(items), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(items), longest), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(items), longest), dtype=torch.long)
        for i, it in enumerate(items):
            n = len(it["input_ids"])
            sl = slice(longest - n, longest) if padding_side == "left" else slice(0, n)
            ids[i, sl] = it["input_ids"]
            labels[i, sl] = it["labels"]
            mask[i, sl] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "images": [it["images"] for it in items]}

    # --- decoding passthrough -----------------------------------------------------------------
    def decode(self, *args, **kwargs) -> str:
        return self.tokenizer.decode(*args, **kwargs)

    def batch_decode(self, *args, **kwargs) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)
