"""Loading the model and processor a stage starts from, and saying what was loaded from where."""
from __future__ import annotations

import dataclasses
import importlib.util
import logging

import torch

from sicog.train.artefacts import load_llm_weights, load_projector_artefact
from sicog.train.config import TrainConfig
from sicog.train.stages import Stage

logger = logging.getLogger(__name__)


def choose_attn_implementation(requested: str = "auto") -> str:
    """flash_attention_2 when flash-attn imports and CUDA is present, else PyTorch SDPA."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_for_stage(cfg: TrainConfig, stage: Stage):
    """(model, processor) for `stage`: the model folder, then the LLM and projector when given."""
    from sicog.model.folder import load_model_folder

    attn = choose_attn_implementation(cfg.attn_implementation)
    # Parameters stay fp32 (the optimizer's master copy) unless DeepSpeed keeps its own.
    dtype = torch.bfloat16 if cfg.training.get("bf16") and cfg.training.get("deepspeed") else torch.float32
    model, processor = load_model_folder(cfg.model_name_or_path, "--model-name-or-path",
                                         attn_implementation=attn, dtype=dtype)
    logger.info("loaded the model from %s (attention: %s, dtype: %s)", cfg.model_name_or_path, attn, dtype)
    if cfg.llm_ckpt_dir:
        load_llm_weights(model, cfg.llm_ckpt_dir)
    if cfg.mm_projector_checkpoint:
        load_projector_artefact(model, cfg.mm_projector_checkpoint)
    if not stage.slicing and processor.layout.projector_type == "resampler":
        processor.layout = dataclasses.replace(processor.layout, max_slices=0)
        logger.info("%s: images are not sliced (overview only)", stage.name)
    model.config.use_cache = False
    return model, processor
