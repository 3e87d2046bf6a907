"""Assemble a fresh SICOG model: `sicog build-model` (random tiny models for tests: tests/tiny_models.py).

`build_model` takes a CLIP folder (a CLIPVisionModel folder or a full CLIPModel folder) and a
Qwen2ForCausalLM folder with its tokenizer, adds `<image>` to the tokenizer (resizing the LLM
embeddings when needed), attaches a freshly initialised projector and returns the model and
its processor. Folder kinds are recognised only by `config.model_type`.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, CLIPVisionModel, Qwen2ForCausalLM

from sicog.data.tokens import IM_END, SPECIAL_TOKENS
from sicog.data.tokens import IMAGE_TOKEN as IMAGE

from .configuration import SicogConfig
from .modeling import SicogForConditionalGeneration
from .precision import DTYPES, dtype_named
from .processing import SicogProcessor
from .tiers import load_tier

log = logging.getLogger(__name__)

VISION_TYPES = ("clip", "clip_vision_model")
LLM_TYPES = ("qwen2",)

def _model_fields(tier: dict, patch_size: int) -> dict:
    fields = dict(tier.get("model") or {})
    tier_patch = fields.pop("patch_size", patch_size)
    if tier_patch != patch_size:
        raise ValueError(f"tier {tier.get('tier')!r} expects patch size {tier_patch}, the vision tower has {patch_size}")
    return fields


def _set_special_ids(text_config, tokenizer) -> None:
    text_config.eos_token_id = tokenizer.convert_tokens_to_ids(IM_END)
    text_config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else text_config.eos_token_id


def _set_generation_ids(model: SicogForConditionalGeneration) -> None:
    """Generation stops at `<|im_end|>` and pads with the tokenizer's pad token."""
    gen = model.generation_config
    gen.eos_token_id = model.config.text_config.eos_token_id
    gen.pad_token_id = model.config.text_config.pad_token_id
    model.config.eos_token_id = gen.eos_token_id
    model.config.pad_token_id = gen.pad_token_id


def add_special_tokens(tok):
    """Adds the ChatML tokens and `<image>` the tokenizer lacks (in place) and a pad token if unset."""
    missing = [t for t in SPECIAL_TOKENS[1:] if tok.convert_tokens_to_ids(t) in (None, tok.unk_token_id)]
    if missing:
        tok.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
        log.info("added special tokens %s to the tokenizer", missing)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_vision_tower(path: str | Path, dtype=None) -> CLIPVisionModel:
    cfg = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
    if cfg.model_type not in VISION_TYPES:
        raise ValueError(f"{path}: model_type {cfg.model_type!r} is not a CLIP model (expected one of {VISION_TYPES})")
    return CLIPVisionModel.from_pretrained(str(path), dtype=dtype)


def load_llm(path: str | Path, dtype=None) -> Qwen2ForCausalLM:
    cfg = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
    if cfg.model_type not in LLM_TYPES:
        raise ValueError(f"{path}: model_type {cfg.model_type!r} is not a supported LLM (expected one of {LLM_TYPES})")
    return Qwen2ForCausalLM.from_pretrained(str(path), dtype=dtype)


def build_model(vision: str | Path, llm: str | Path, tier: str = "tiny", tokenizer: str | Path | None = None,
                projector_type: str = "resampler", separator_token_ids: list[int] | None = None,
                dtype: str = "auto", seed: int = 0):
    """A fresh SICOG model (pretrained vision tower and LLM, new projector) and its processor."""
    tier_cfg = load_tier(tier)
    torch_dtype = "auto" if dtype == "auto" else dtype_named(dtype)   # auto: as stored in each checkpoint
    tok = add_special_tokens(AutoTokenizer.from_pretrained(str(tokenizer or llm), trust_remote_code=False))

    vision_tower = load_vision_tower(vision, torch_dtype)
    language_model = load_llm(llm, torch_dtype)
    if len(tok) > language_model.get_input_embeddings().weight.shape[0]:
        language_model.resize_token_embeddings(len(tok), mean_resizing=True)
        log.info("resized LLM embeddings to %d", len(tok))
    dt = language_model.dtype
    vision_tower.to(dt)
    _set_special_ids(language_model.config, tok)

    fields = _model_fields(tier_cfg, vision_tower.config.patch_size)
    fields.update(projector_type=projector_type, separator_token_ids=separator_token_ids)
    config = SicogConfig(
        vision_config=vision_tower.config,
        text_config=language_model.config,
        image_token_id=tok.convert_tokens_to_ids(IMAGE),
        **fields,
    )
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = SicogForConditionalGeneration(config)
    model.model.vision_tower = vision_tower
    model.model.language_model = language_model.model
    model.lm_head = language_model.lm_head  # the token embeddings themselves when tied
    model.model.projector = model.projector.to_empty(device="cpu")
    for module in model.projector.modules():
        model._init_weights(module)
    model.projector.to(dt)
    model.config.dtype = dt
    _set_generation_ids(model)
    log.info("built %s model: vision %s, LLM %s, projector %s (fresh), %.1fM parameters",
             tier_cfg.get("tier", tier), vision, llm, projector_type,
             sum(p.numel() for p in model.parameters()) / 1e6)
    return model, SicogProcessor.from_config(config, tok)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vision", required=True, help="CLIP folder (CLIPVisionModel or full CLIPModel)")
    parser.add_argument("--llm", required=True, help="Qwen2ForCausalLM folder (with its tokenizer)")
    parser.add_argument("--tier", default="tiny", help="tier name (tiny, paper) or YAML path")
    parser.add_argument("--out", required=True, help="output folder (model, processor, tokenizer)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the LLM folder)")
    parser.add_argument("--projector-type", default="resampler", choices=["resampler", "mlp"])
    parser.add_argument("--separator-token-ids", type=int, nargs=2, default=None, metavar=("ROW", "OVERVIEW"),
                        help="raw separator ids (the authors' weights use 13 29892)")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help="weights dtype (auto: the LLM's)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from sicog.data.checks import InputError, check_input_dir, check_output_dir
    from sicog.data.output_lock import OutputLock
    from sicog.model.folder import check_part_folder

    try:
        load_tier(args.tier)
    except ValueError as e:
        raise InputError(f"--tier: {e}") from None
    check_output_dir(args.out, "--out", create=False)
    check_part_folder(args.vision, "--vision", VISION_TYPES, "a CLIP folder")
    check_part_folder(args.llm, "--llm", LLM_TYPES, "a Qwen2 LLM folder", tokenizer=not args.tokenizer)
    if args.tokenizer:
        check_input_dir(args.tokenizer, "--tokenizer", "a tokenizer folder")
    out = check_output_dir(args.out, "--out")
    with OutputLock(out, "--out"):  # one writer per output
        model, processor = build_model(args.vision, args.llm, args.tier, args.tokenizer, args.projector_type,
                                       args.separator_token_ids, args.dtype, args.seed)
        model.save_pretrained(str(out))
        processor.save_pretrained(str(out))
    log.info("saved model and processor to %s", out)
    return 0
