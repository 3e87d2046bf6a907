"""The reproduction plans (`sicog reproduce --size NAME`) as typed objects, read from the shipped
`configs/experiments/reproduce.yaml`. A plan with a key this class does not know, or without one it
needs, is refused with the plan, the file and the key named.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sicog.config_files import packaged
from sicog.cycle.variants import get_variants

EXPERIMENTS = packaged("experiments", "reproduce.yaml")


@dataclass(frozen=True)
class Plan:
    """One size of the cycle. Sizes were set for a time budget, never tuned on the benchmarks."""

    size: str                             # the plan's name in the YAML (micro, mini, mini-full)
    world: str                            # `sicog world build --size`
    world_seed: int
    seeds: list[int]                      # training seeds (the headline pair runs over all of them)
    num_candidates: int                   # N candidates per input
    caption_max_new_tokens: int
    reasoning_max_new_tokens: int
    generate_batch_size: int
    threshold: float                      # the curation threshold of the SICOG row
    thresholds: list[float]               # every threshold curation writes (and diagnostics sweep)
    rows: list[str]                       # the table's rows (variants)
    pretrain_steps: int | None = None     # unimodal pre-training steps; None: the world's default
    pool_images: int | None = None        # the first N records of each pool; None: all of them
    pool_questions: int | None = None
    eval_limit: int | None = None         # first N records of each benchmark; None: all
    stage2_first: str | None = None       # a file of the world's data/ trained alone before sft.jsonl in stage 2
    train_overrides: dict = field(default_factory=dict)   # trainer flags for every stage
    stage_overrides: dict = field(default_factory=dict)   # {stage or stage2_first: {flag: value}}, over train_overrides

    def overrides(self, stage: str) -> dict:
        """The trainer flags a stage gets beyond its defaults."""
        return {**self.train_overrides, **(self.stage_overrides.get(stage) or {})}

    def pool_limit(self, pool: str) -> int | None:
        return {"pool_images": self.pool_images, "pool_questions": self.pool_questions}[pool]


def plan_from_dict(size: str, raw: dict, where: str = "the plan") -> Plan:
    """A `Plan` from one entry of the YAML; ValueError naming the plan and the unknown or missing key."""
    if not isinstance(raw, dict):
        raise ValueError(f"plan {size!r} in {where} is not a mapping")
    known = {f.name for f in dataclasses.fields(Plan)} - {"size"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"plan {size!r} in {where}: unknown key {', '.join(map(repr, unknown))}; "
                         f"known keys: {', '.join(sorted(known))}")
    required = {f.name for f in dataclasses.fields(Plan)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING} - {"size"}
    missing = sorted(required - set(raw))
    if missing:
        raise ValueError(f"plan {size!r} in {where}: missing key {', '.join(map(repr, missing))}")
    values = {k: v for k, v in raw.items() if v is not None or k not in ("train_overrides", "stage_overrides")}
    plan = Plan(size=size, **values)
    if not plan.seeds or not all(isinstance(s, int) for s in plan.seeds):
        raise ValueError(f"plan {size!r} in {where}: seeds must be a non-empty list of integers")
    if plan.threshold not in plan.thresholds:
        raise ValueError(f"plan {size!r} in {where}: threshold {plan.threshold} is not among thresholds "
                         f"{plan.thresholds} (curation writes only those)")
    first = plan.stage2_first
    if first is not None and (not isinstance(first, str) or not first or Path(first).is_absolute() or ".." in Path(first).parts):
        raise ValueError(f"plan {size!r} in {where}: stage2_first must name a file under the world's data/ "
                         f"(e.g. sft_listing.jsonl), not {first!r}")
    try:
        get_variants(plan.rows)
    except ValueError as e:
        raise ValueError(f"plan {size!r} in {where}: {e}") from None
    return plan


def _read(path: str | Path) -> dict:
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not a mapping of plan names to plans")
    return raw


def load_plans(path: str | Path = EXPERIMENTS) -> dict[str, Plan]:
    """Every plan of the file, each checked."""
    return {size: plan_from_dict(size, entry, str(path)) for size, entry in _read(path).items()}


def load_plan(size: str, path: str | Path = EXPERIMENTS) -> Plan:
    """The plan named `size`; ValueError listing the plans of the file when there is none."""
    raw = _read(path)
    if size not in raw:
        raise ValueError(f"unknown size {size!r}; {path} defines {sorted(raw)}")
    return plan_from_dict(size, raw[size], str(path))
