"""Model tiers (`sicog/configs/tiers/*.yaml`): tiny (mini world, CPU) and paper (CLIP-L/336 + Qwen2-7B)."""
from __future__ import annotations


import yaml

from sicog.config_files import named_yaml, packaged

TIERS_DIR = packaged("tiers")


def load_tier(name_or_path: str) -> dict:
    """The tier dict from a name (`tiny`, `paper`) or a YAML path."""
    p = named_yaml("tiers", name_or_path, "tier")
    with p.open() as f:
        tier = yaml.safe_load(f)
    tier.setdefault("model", {})
    return tier
