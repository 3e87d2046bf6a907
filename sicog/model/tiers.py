"""Model tiers (`configs/tiers/*.yaml`): tiny (mini world, CPU) and paper (CLIP-L/336 + Qwen2-7B)."""
from __future__ import annotations

from pathlib import Path

import yaml

TIERS_DIR = Path(__file__).resolve().parents[2] / "configs" / "tiers"


def load_tier(name_or_path: str) -> dict:
    """The tier dict from a name (`tiny`, `paper`) or a YAML path."""
    p = Path(name_or_path)
    if not p.suffix:
        p = TIERS_DIR / f"{name_or_path}.yaml"
    if not p.exists():
        known = sorted(x.stem for x in TIERS_DIR.glob("*.yaml"))
        raise ValueError(f"unknown tier {name_or_path!r}; known: {known} or a YAML path")
    with p.open() as f:
        tier = yaml.safe_load(f)
    tier.setdefault("model", {})
    return tier
