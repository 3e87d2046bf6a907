"""Saved SICOG model folders: checked before anything is built, then loaded.

A folder without `config.json` would otherwise build a default-size model (gigabytes of memory
before a shape mismatch), and a `config.json` of another `model_type` would load with a warning
only. `check_model_folder` reads the few small files first and raises an `InputError` naming the
argument and what is missing.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from sicog.data.checks import InputError, check_input_dir

MODEL_TYPE = "sicog"  # SicogConfig.model_type (kept here so the check needs no torch import)
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
TOKENIZER = ("tokenizer_config.json",)


def _model_type(p: Path, arg: str, missing_hint: str) -> str | None:
    config = p / "config.json"
    if not config.is_file():
        raise InputError(f"{arg} {p} has no config.json: {missing_hint}")
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise InputError(f"{arg} {config}: not a readable model config ({e})") from None


def _check_weights(p: Path, arg: str) -> None:
    if not any((p / name).is_file() for name in WEIGHTS):
        other = sorted(x.name for x in p.glob("*.bin")) or sorted(x.name for x in p.glob("*.pt"))
        hint = f" (found {', '.join(other)}: only safetensors are loaded)" if other else ""
        raise InputError(f"{arg} {p} has no weights: expected {' or '.join(WEIGHTS)}{hint}")
    index = p / WEIGHTS[1]
    if index.is_file() and not (p / WEIGHTS[0]).is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError) as e:
            raise InputError(f"{arg} {index}: not a readable weights index ({e})") from None
        missing = [s for s in shards if not (p / s).is_file()]
        if missing:
            raise InputError(f"{arg} {p}: weight shards listed in {WEIGHTS[1]} are missing: {missing[:3]}")


def check_model_folder(path: str | os.PathLike, arg: str) -> Path:
    """The folder of a saved SICOG model (config, safetensors weights, tokenizer); InputError otherwise."""
    p = check_input_dir(path, arg, "a saved SICOG model")
    model_type = _model_type(p, arg, "not a saved SICOG model "
                                     "(build one with `sicog build-model`, or give a training output folder)")
    if model_type != MODEL_TYPE:
        raise InputError(f"{arg} {p} holds a model of type {model_type!r}, not a SICOG model "
                         f"(model_type {MODEL_TYPE!r}); an LLM or CLIP folder is assembled into one "
                         "with `sicog build-model`")
    _check_weights(p, arg)
    missing = [name for name in TOKENIZER if not (p / name).is_file()]
    if missing:
        raise InputError(f"{arg} {p} has no tokenizer ({', '.join(missing)} missing); a saved SICOG model "
                         "keeps its processor and tokenizer beside the weights")
    return p


def check_part_folder(path: str | os.PathLike, arg: str, types: tuple[str, ...], what: str,
                      tokenizer: bool = False) -> Path:
    """A pretrained part (a CLIP or an LLM folder) of one of `types`, with safetensors weights (and a
    tokenizer when `tokenizer`); InputError naming `arg` otherwise. Used before `sicog build-model`."""
    p = check_input_dir(path, arg, what)
    model_type = _model_type(p, arg, f"not {what}")
    if model_type not in types:
        raise InputError(f"{arg} {p} holds a model of type {model_type!r}, not {what} "
                         f"(model_type one of {', '.join(types)})")
    _check_weights(p, arg)
    if tokenizer and not (p / TOKENIZER[0]).is_file():
        raise InputError(f"{arg} {p} has no tokenizer ({TOKENIZER[0]} missing); give --tokenizer")
    return p


def load_model_folder(path: str | os.PathLike, arg: str, **model_kwargs):
    """(model, processor) of a checked SICOG model folder; `model_kwargs` go to from_pretrained."""
    from sicog.model import SicogForConditionalGeneration, SicogProcessor

    p = check_model_folder(path, arg)
    return SicogForConditionalGeneration.from_pretrained(p, **model_kwargs), SicogProcessor.from_pretrained(p)
