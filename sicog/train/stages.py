"""The stage registry and `freeze(model, stage)`, the only stage-aware model code.

A stage names the model parts it trains; its learning rate and global batch live in
`configs/stages/<profile>.yaml`. Adding a stage is one `register_stage(Stage(...))` call here plus
its entry in those YAML files.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn

logger = logging.getLogger(__name__)

PARTS: tuple[str, ...] = ("vision_tower", "projector", "language_model")


@dataclass(frozen=True)
class Stage:
    name: str
    trainable: tuple[str, ...]
    description: str
    # SPEC section 1: stage 1 aligns on whole images (overview only, no slices).
    slicing: bool = True

    @property
    def projector_only(self) -> bool:
        """A projector-only stage saves the `mm_projector.safetensors` artefact instead of a full model."""
        return self.trainable == ("projector",)


STAGES: dict[str, Stage] = {}


def register_stage(stage: Stage) -> Stage:
    unknown = set(stage.trainable) - set(PARTS)
    if unknown:
        raise ValueError(f"stage {stage.name!r} names unknown parts {sorted(unknown)}; parts: {PARTS}")
    STAGES[stage.name] = stage
    return stage


register_stage(Stage("stage0", PARTS, "warm-up of the perception or reasoning model on annotated data"))
register_stage(Stage("stage1", ("projector",), "modality alignment: projector only", slicing=False))
register_stage(Stage("stage1_5", PARTS, "multimodal pre-training on curated self-generated data"))
register_stage(Stage("stage2", PARTS, "visual instruction tuning"))
register_stage(Stage("dpo", PARTS, "DPO warm-up on preference pairs against a frozen reference (sicog.train.dpo)"))


def get_stage(name: str) -> Stage:
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; known stages: {sorted(STAGES)}")
    return STAGES[name]


def numel(p: nn.Parameter) -> int:
    """Full element count, also for a ZeRO-3 partitioned parameter (whose local tensor is empty)."""
    return int(getattr(p, "ds_numel", p.numel()))


def part_params(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The parameters of each part, found by identity (robust to how the parts are nested).

    The LM head (the model's output embeddings) belongs to the language model; tied to the token
    embeddings, it is listed once.
    """
    parts = {part: list(getattr(model, part).parameters()) for part in PARTS}
    head = model.get_output_embeddings()
    seen = {id(p) for p in parts["language_model"]}
    parts["language_model"] += [p for p in head.parameters() if id(p) not in seen]
    return parts


def _layer_name(param_name: str) -> str:
    """`model.vision_tower.encoder.layers.23.mlp.fc1.weight` -> `encoder.layers.23`;
    `...post_layernorm.weight` -> `post_layernorm`."""
    parts = param_name.split("vision_tower.", 1)[1].split(".")
    return ".".join(parts[:3]) if parts[0] == "encoder" else parts[0]


def freeze(model: nn.Module, stage: Stage | str) -> dict[str, dict[str, int | bool]]:
    """Set `requires_grad` on every parameter for `stage`; returns and logs {part: {params, trainable}}.

    Every parameter must belong to one of PARTS; anything else is an error rather than a silent
    guess about whether it should train.
    """
    stage = get_stage(stage) if isinstance(stage, str) else stage
    summary: dict[str, dict[str, int | bool]] = {}
    owner: dict[int, str] = {}
    for part, params in part_params(model).items():
        train = part in stage.trainable
        for p in params:
            p.requires_grad_(train)
            owner[id(p)] = part
        summary[part] = {"params": sum(numel(p) for p in params), "trainable": train}
    stray = [name for name, p in model.named_parameters() if id(p) not in owner]
    if stray:
        raise ValueError(f"parameters outside {PARTS}: {stray[:5]}{' ...' if len(stray) > 5 else ''}")
    # The tower's layers above the feature layer never run: frozen (kept in the checkpoint, out of
    # the optimizer and of DDP's unused-parameter check). See `unused_vision_parameters`.
    unused = getattr(model, "unused_vision_parameters", dict)()
    if "vision_tower" in stage.trainable and unused:
        for p in unused.values():
            p.requires_grad_(False)
        n = sum(numel(p) for p in unused.values())
        summary["vision_tower"]["unused_frozen"] = n
        logger.info("%s: vision_tower: froze %s parameters above vision_feature_layer that never run (%s)",
                    stage.name, f"{n:,}", ", ".join(sorted({_layer_name(k) for k in unused})))
    for part, info in summary.items():
        logger.info("%s: %-14s %12s parameters, %s", stage.name, part, f"{info['params']:,}",
                    "TRAINABLE" if info["trainable"] else "frozen")
    return summary
