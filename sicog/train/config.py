"""One typed config per training run.

Layers, later wins: `configs/stages/<profile>.yaml` (its `defaults`, then `stages.<stage>`), the
user's YAML (`--config`), then command-line flags. Keys are either TrainConfig fields or HF
`TrainingArguments` fields (kept in `TrainConfig.training`); anything else is an error naming the
key. The gradient accumulation is derived from the global batch, the per-device batch and the
world size; an explicit accumulation that disagrees is an error, never silently rescaled.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sicog.config_files import packaged
from sicog.data.records import atomic_write_text
from sicog.model.precision import ENV_VAR, check_precision, default_precision
from sicog.runtime import rank_info
from sicog.train.stages import get_stage

STAGES_DIR = packaged("stages")
PROFILES = ("tiny", "paper")
CONFIG_NAME = "train_config.yaml"


@dataclass
class TrainConfig:
    stage: str
    model_name_or_path: str
    data_path: str
    profile: str = "tiny"
    image_folder: str | None = None
    mm_projector_checkpoint: str | None = None
    llm_ckpt_dir: str | None = None
    model_max_length: int = 4096
    global_batch_size: int = 128
    group_by_modality_length: bool = True
    mega_batch_mult: int = 8
    peak_tflops: float | None = None  # per device; measured at start when not given
    attn_implementation: str = "auto"  # auto: flash_attention_2 when importable on CUDA, else sdpa
    # auto | fp32 | bf16 (sicog.model.precision): bf16 = autocast over fp32 master weights (the Trainer's
    # `bf16`); auto = bf16 where the device has it natively. Saved resolved (what the run used).
    precision: str = "auto"
    # per-part learning rates (None: the run's learning_rate); the parts as in sicog.train.stages
    mm_vision_tower_lr: float | None = None
    mm_projector_lr: float | None = None
    # six-slice augmentation of the authors' train.py: this fraction of the training images that would
    # not give 6 slices are resized to the area of 6 slices (0: off; the paper profile sets 0.1)
    regrid_prob: float = 0.0
    dpo_beta: float = 0.1  # dpo stage: sigmoid DPO temperature
    dpo_sft_weight: float = 1.0  # dpo stage: weight of the NLL term on the chosen answer
    dpo_precompute_ref: bool = False  # dpo stage: reference log-probs computed once before training
    world_size: int = 1
    training: dict[str, Any] = field(default_factory=dict)  # HF TrainingArguments kwargs

    @property
    def output_dir(self) -> str:
        return self.training["output_dir"]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, out_dir: str | os.PathLike) -> Path:
        path = Path(out_dir) / CONFIG_NAME
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


OWN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)} - {"training", "world_size"}


def training_argument_names() -> set[str]:
    from transformers import TrainingArguments

    return {f.name for f in dataclasses.fields(TrainingArguments) if f.init}


def load_profile(profile: str, stage: str) -> dict[str, Any]:
    """The profile's defaults merged with its entry for `stage`."""
    path = STAGES_DIR / f"{profile}.yaml"
    if profile not in PROFILES or not path.exists():
        raise ValueError(f"unknown profile {profile!r}; use one of {PROFILES}")
    data = yaml.safe_load(path.read_text()) or {}
    stages = data.get("stages") or {}
    if stage not in stages:
        raise ValueError(f"stage {stage!r} has no entry in {path}; entries: {sorted(stages)}")
    return {**(data.get("defaults") or {}), **stages[stage]}


def derive_accumulation(global_batch: int, per_device: int, world_size: int) -> int:
    """Accumulation steps so that per_device * world_size * steps == global_batch."""
    for name, value in (("global batch", global_batch), ("per-device batch", per_device), ("world size", world_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    per_step = per_device * world_size
    if global_batch % per_step:
        raise ValueError(
            f"global batch {global_batch} is not divisible by per-device batch {per_device} x world size "
            f"{world_size} = {per_step}; choose a per-device batch and a world size whose product divides "
            f"{global_batch}, or change the global batch"
        )
    return global_batch // per_step


PART_LR_FIELDS = {"vision_tower": "mm_vision_tower_lr", "projector": "mm_projector_lr"}


def _check_part_learning_rates(own: dict[str, Any], training: dict[str, Any]) -> None:
    """Per-part learning rates are positive numbers, and need the optimizer the Trainer builds."""
    given = [key for key in PART_LR_FIELDS.values() if own.get(key) is not None]
    for key in given:
        try:
            own[key] = float(own[key])
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be a number, got {own[key]!r}") from None
        if not own[key] > 0:
            raise ValueError(f"{key} must be positive, got {own[key]}")
    ds = training.get("deepspeed")
    if given and ds:
        import json

        ds_config = ds if isinstance(ds, dict) else json.loads(Path(ds).read_text())
        if "optimizer" in ds_config:
            raise ValueError(f"{', '.join(given)} need the optimizer built by the Trainer, but the DeepSpeed config "
                             "defines its own `optimizer`; remove that block or drop the per-part learning rates")


def _read_user_config(cfg_path: Path) -> dict[str, Any]:
    """The settings of a --config YAML, flat: TrainConfig fields and TrainingArguments side by side."""
    if not cfg_path.exists():
        raise ValueError(f"no such config file: {cfg_path}")
    user = yaml.safe_load(cfg_path.read_text()) or {}
    if not isinstance(user, dict):
        raise ValueError(f"{cfg_path}: expected a mapping of settings")
    # a saved train_config.yaml works as --config: its TrainingArguments sit under `training`,
    # and its world size is re-derived for this launch
    user = {**user.pop("training", {}), **user}
    user.pop("world_size", None)
    return user


def _rename_transformers4_settings(merged: dict[str, Any]) -> None:
    """The transformers 4 spellings of settings that transformers 5 renamed, rewritten in place."""
    if "warmup_ratio" in merged:  # transformers 5 folded it into warmup_steps (a fraction < 1)
        ratio = float(merged.pop("warmup_ratio"))
        if not 0 <= ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {ratio}")
        merged["warmup_steps"] = ratio
    for old, new in (("gradient_checkpointing", "activation_checkpointing"),
                     ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):
        if old in merged:  # transformers 5 renamed these; the familiar flags still work
            merged[new] = merged.pop(old)


def _check_learning_rate(lr: Any) -> None:
    if lr is None:
        return
    try:
        bad = not float(lr) >= 0
    except (TypeError, ValueError):
        bad = True
    if bad:
        raise ValueError(f"learning_rate must be a number at least 0, got {lr!r}")


def resolve_config(overrides: dict[str, Any], world_size: int | None = None) -> TrainConfig:
    """Build the run's TrainConfig from the layers described in the module docstring.

    `overrides` are the command-line values (only those given); it may hold `config`, a YAML path.
    """
    overrides = dict(overrides)
    user = _read_user_config(Path(overrides["config"])) if overrides.get("config") else {}
    overrides.pop("config", None)
    stage = overrides.get("stage") or user.get("stage")
    if not stage:
        raise ValueError("no stage given (--stage or `stage:` in the config YAML)")
    get_stage(stage)
    profile = overrides.get("profile") or user.get("profile") or "tiny"
    merged = {**load_profile(profile, stage), **user, **overrides, "stage": stage, "profile": profile}
    if "precision" not in user and "precision" not in overrides and os.environ.get(ENV_VAR, "").strip():
        merged["precision"] = default_precision()  # SICOG_PRECISION overrides the profile, not the user
    merged["precision"] = check_precision(merged.get("precision", "auto"))
    _rename_transformers4_settings(merged)
    hf_names = training_argument_names()
    unknown = sorted(k for k in merged if k not in OWN_FIELDS and k not in hf_names)
    if unknown:
        raise ValueError(f"unknown settings {unknown}: neither TrainConfig fields nor TrainingArguments fields")
    own = {k: v for k, v in merged.items() if k in OWN_FIELDS}
    training = {k: v for k, v in merged.items() if k not in OWN_FIELDS}
    for required in ("model_name_or_path", "data_path"):
        if not own.get(required):
            raise ValueError(f"missing required setting {required!r}")
    if not training.get("output_dir"):
        raise ValueError("missing required setting 'output_dir'")
    _check_part_learning_rates(own, training)
    _check_learning_rate(training.get("learning_rate"))

    world = world_size if world_size is not None else rank_info().world_size
    per_device = int(training.get("per_device_train_batch_size", 8))
    global_batch = int(own.get("global_batch_size", TrainConfig.global_batch_size))
    accumulation = derive_accumulation(global_batch, per_device, world)
    explicit = overrides.get("gradient_accumulation_steps", user.get("gradient_accumulation_steps"))
    if explicit is not None and int(explicit) != accumulation:
        raise ValueError(
            f"gradient_accumulation_steps={explicit} disagrees with global batch {global_batch} = per-device batch "
            f"{per_device} x world size {world} x accumulation {accumulation}; drop it or fix the batch sizes"
        )
    training.update(per_device_train_batch_size=per_device, gradient_accumulation_steps=accumulation)
    return TrainConfig(**own, world_size=world, training=training)
