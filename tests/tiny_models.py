"""Tiny models built in-process for the tests and benchmarks (test fixtures, not package code).

`build_random_tiny` is a randomly initialised tiny-tier model with its processor; its tokenizer
(`builtin_tokenizer`) is trained in well under a second on a fixed set of sentences with the
world's tokenizer trainer. Benchmarks import this module with `tests/` on `sys.path`.
"""
from __future__ import annotations

import torch
from transformers import CLIPVisionConfig, Qwen2Config

from sicog.data.formats import CAPTION_PROMPTS, COD_HEADINGS, COT_HEADINGS, STEP_BY_STEP_PHRASE
from sicog.data.tokens import IMAGE_TOKEN, SYSTEM_PROMPT
from sicog.model import SicogConfig, SicogForConditionalGeneration, SicogProcessor
from sicog.model.build import _model_fields, _set_generation_ids, _set_special_ids
from sicog.model.tiers import load_tier
from sicog.world.tokenizer import train_tokenizer

_BUILTIN_SENTENCES = [
    *COD_HEADINGS,
    *COT_HEADINGS,
    *CAPTION_PROMPTS.values(),
    STEP_BY_STEP_PHRASE,
    SYSTEM_PROMPT,
    "The image shows a red circle to the left of a blue square on a white background.",
    "A small green triangle is above a large yellow star. The letter A is printed on it.",
    "How many objects are there? There are three objects: two circles and one square.",
    "What colour is the square? The square is blue. Answer: blue.",
    "Is there a cat in the image? No, there is no cat in the image.",
    "Step 1: the question asks for the colour. Step 2: the square is blue, so the answer is blue.",
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 0. Yes. No. left, right, above, below, next to, between.",
]


def builtin_tokenizer(vocab_size: int = 512):
    """A small tokenizer trained on a fixed set of sentences (deterministic, well under a second)."""
    return train_tokenizer(_BUILTIN_SENTENCES * 4, vocab_size=vocab_size)


def build_random_tiny(seed: int = 0, tokenizer=None, projector_type: str = "resampler", **overrides):
    """A randomly initialised tiny-tier model and its processor, built in-process.

    When `tokenizer` is None a small one is trained on built-in sentences. `overrides` set
    SicogConfig fields (e.g. `max_slices=2`).
    """
    tier = load_tier("tiny")
    if tokenizer is None:
        tokenizer = builtin_tokenizer()
    torch.manual_seed(seed)
    vision_config = CLIPVisionConfig(**tier["vision"])
    text_config = Qwen2Config(**tier["text"], vocab_size=len(tokenizer))
    _set_special_ids(text_config, tokenizer)
    fields = _model_fields(tier, vision_config.patch_size)
    fields.update(projector_type=projector_type, **overrides)
    config = SicogConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        **fields,
    )
    model = SicogForConditionalGeneration(config)
    _set_generation_ids(model)
    model.eval()
    return model, SicogProcessor.from_config(config, tokenizer)


def spread_llm_weights(model, seed: int = 0, std: float = 0.15):
    """Redraws the language model's matrices with a larger spread (in place; returns the model).

    The default initialisation makes a random tiny model repeat one token whatever the input;
    with these weights its output depends on the context, so comparisons of generated tokens
    compare real sequences.
    """
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.language_model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, std)
    return model
