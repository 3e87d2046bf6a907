"""Weights moved between stages: the stage-1 projector artefact and an LLM folder's weights.

Stage 1 trains only the projector and writes `mm_projector.safetensors` (the projector's state
dict) with `mm_projector_config.json` (the model config it fits and the base model it was trained
on). Stage 1.5 loads it (`--mm-projector-checkpoint`, a file or the folder holding it) and, when
given, the language model weights of an LLM folder (`--llm-ckpt-dir`, safetensors only).
Both loaders work under ZeRO-3 (parameters are gathered, written on rank 0, and re-partitioned).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sicog.data.records import atomic_write_text

logger = logging.getLogger(__name__)

PROJECTOR_WEIGHTS = "mm_projector.safetensors"
PROJECTOR_CONFIG = "mm_projector_config.json"


def gathered(params: list[nn.Parameter], modify: bool):
    """Context in which ZeRO-3 partitioned `params` are whole (a no-op without ZeRO-3)."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    if params and is_deepspeed_zero3_enabled() and hasattr(params[0], "ds_id"):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=0 if modify else None)
    return contextlib.nullcontext()


def save_projector_artefact(state_dict: dict[str, torch.Tensor], out_dir: str | os.PathLike, meta: dict) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    tmp = out / f".{PROJECTOR_WEIGHTS}.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / PROJECTOR_WEIGHTS)
    atomic_write_text(out / PROJECTOR_CONFIG, json.dumps(meta, indent=2, default=str) + "\n")
    logger.info("saved the projector artefact (%d tensors) to %s", len(tensors), out / PROJECTOR_WEIGHTS)
    return out / PROJECTOR_WEIGHTS


def projector_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(path)
    weights = p / PROJECTOR_WEIGHTS if p.is_dir() else p
    if not weights.is_file():
        raise FileNotFoundError(f"no projector artefact at {p} (expected {PROJECTOR_WEIGHTS})")
    if weights.suffix != ".safetensors":
        raise ValueError(f"{weights}: projector weights must be a .safetensors file")
    return weights, weights.parent / PROJECTOR_CONFIG


def read_projector_meta(path: str | os.PathLike) -> dict:
    _, cfg = projector_paths(path)
    return json.loads(cfg.read_text()) if cfg.is_file() else {}


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], what: str, source: Path,
               allow_missing: tuple[str, ...] = ()) -> None:
    own = dict(module.named_parameters(remove_duplicate=False))
    own.update(dict(module.named_buffers(remove_duplicate=False)))
    expected = set(module.state_dict().keys())
    missing = sorted(k for k in expected if k not in state and k not in allow_missing)
    unexpected = sorted(k for k in state if k not in expected)
    if missing or unexpected:
        raise ValueError(f"{source} does not fit the {what}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    params = [p for k, p in module.named_parameters() if k in state]
    own = {k: t for k, t in own.items() if k in state}
    with gathered(params, modify=True):
        for k, t in own.items():
            if tuple(t.shape) != tuple(state[k].shape):
                raise ValueError(f"{source}: {what} tensor {k} has shape {tuple(state[k].shape)}, "
                                 f"the model expects {tuple(t.shape)}")
            with torch.no_grad():
                t.copy_(state[k].to(dtype=t.dtype, device=t.device))


def load_projector_artefact(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load a projector artefact into `model.projector`; returns its metadata."""
    weights, _ = projector_paths(path)
    _load_into(model.projector, load_file(str(weights)), "projector", weights)
    logger.info("loaded the projector from %s", weights)
    return read_projector_meta(path)


def read_folder_weights(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a model folder's safetensors (sharded or not), under its saved name."""
    root = Path(folder)
    index = root / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (root / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"{root}: no model.safetensors or model.safetensors.index.json (safetensors only)")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_file(str(root / name)))
    return state


def load_llm_weights(model: nn.Module, llm_dir: str | os.PathLike) -> None:
    """Load the language model and LM head weights of a HF causal-LM folder (safetensors, sharded or not)."""
    from sicog.model.modeling import causal_lm_view

    root = Path(llm_dir)
    state = read_folder_weights(root)
    tied = model.config.tie_word_embeddings
    _load_into(causal_lm_view(model), state, "language model", root, allow_missing=("lm_head.weight",) if tied else ())
    logger.info("loaded the language model from %s (%d tensors)", root, len(state))


def load_model_weights(model: nn.Module, folder: str | os.PathLike) -> None:
    """Load a saved SICOG model folder's weights into `model` (saved names mapped to the model's).

    What `from_pretrained` does through transformers' conversion mapping, for a model that exists
    already (a resumed run without DeepSpeed); the Trainer's own loader expects the saved names to
    be the model's.
    """
    from sicog.model.modeling import model_key

    root = Path(folder)
    state = {model_key(k): v for k, v in read_folder_weights(root).items()}
    tied = tuple(getattr(model, "all_tied_weights_keys", None) or ())
    _load_into(model, state, "model", root, allow_missing=tied)
    logger.info("loaded the model weights from %s (%d tensors)", root, len(state))
