"""The rows of the reproduction table: the SICOG recipe, its ablations, an oracle and a second round.

A variant says how the stage-1.5 data is made. Steps that two variants share (a warm-up model, a
candidate pool, a curation) get the same folder name, so they run once.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    captions: str | None = "cod"          # cod | dd | None (no caption data)
    reasoning: str | None = "cot"         # cot | direct | None (no reasoning data)
    curation: str = "embedding"           # embedding (argmax + threshold) | random (one candidate, no threshold)
    source: str = "generated"             # generated | gold (oracle: the pools' gold texts)
    round: int = 1                        # 2: the round-1 SICOG model is the new base
    reasoning_warmup: str = "sft"         # sft | dpo (SFT warm-up followed by DPO on preference pairs)

    @property
    def is_baseline(self) -> bool:
        return self.captions is None and self.reasoning is None


VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("baseline", "Baseline (stage 1 + stage 2)", captions=None, reasoning=None),
    Variant("sicog", "SICOG (CoD + CoT, curated)"),
    Variant("dd", "DD captions instead of CoD", captions="dd"),
    Variant("direct", "Direct answers instead of CoT", reasoning="direct"),
    Variant("caption_only", "Caption data only", reasoning=None),
    Variant("reasoning_only", "Reasoning data only", captions=None),
    Variant("no_curation", "Without curation (one random candidate)", curation="random"),
    Variant("oracle", "Oracle (gold texts for the same pools)", source="gold"),
    Variant("round2", "Second round (SICOG model as the base)", round=2),
    Variant("dpo", "DPO reasoning warm-up", reasoning_warmup="dpo"),
]}

# Generation prompt and stage-0 data for each mode.
CAPTION_MODES = {"cod": {"prompt": "cod-default", "seed_data": "cod"},
                 "dd": {"prompt": "default", "seed_data": "dd"}}
REASONING_MODES = {"cot": {"prompt": "cot-default", "seed_data": ("cot", "short")},
                   "direct": {"prompt": "default", "seed_data": ("short",)}}


def get_variants(names: list[str]) -> list[Variant]:
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown rows {unknown}; known: {list(VARIANTS)}")
    if "baseline" not in names:
        names = ["baseline", *names]
    return [VARIANTS[n] for n in names]
