"""The rows of the reproduction table: the SICOG recipe, its ablations, an oracle, later rounds and
the threshold sweep (rows `sicog_tau<T>`: SICOG with curation threshold T instead of the plan's).

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
    round: int = 1                        # n > 1: the round n-1 SICOG model is the new base
    reasoning_warmup: str = "sft"         # sft | dpo (SFT warm-up followed by DPO on preference pairs)
    tau: float | None = None              # curation threshold; None: the plan's

    @property
    def is_baseline(self) -> bool:
        return self.captions is None and self.reasoning is None

    @property
    def previous(self) -> str:
        """The row whose model this row starts from: the baseline, or the previous round."""
        if self.round == 1:
            return "baseline"
        return "sicog" if self.round == 2 else f"round{self.round - 1}"


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
    Variant("round3", "Third round (second-round model as the base)", round=3),
    Variant("dpo", "DPO reasoning warm-up", reasoning_warmup="dpo"),
]}

# Generation prompt and stage-0 data for each mode.
CAPTION_MODES = {"cod": {"prompt": "cod-default", "seed_data": "cod"},
                 "dd": {"prompt": "default", "seed_data": "dd"}}
REASONING_MODES = {"cot": {"prompt": "cot-default", "seed_data": ("cot", "short")},
                   "direct": {"prompt": "default", "seed_data": ("short",)}}


TAU_ROW = "sicog_tau"


def variant(name: str) -> Variant | None:
    """A named row, or `sicog_tau<T>` (SICOG curated at threshold T in [0, 1]); None if unknown."""
    if name in VARIANTS:
        return VARIANTS[name]
    if name.startswith(TAU_ROW):
        try:
            tau = float(name[len(TAU_ROW):])
        except ValueError:
            return None
        if 0.0 <= tau <= 1.0:
            return Variant(f"{TAU_ROW}{tau:g}", f"SICOG curated at tau={tau:g}", tau=tau)
    return None


def get_variants(names: list[str]) -> list[Variant]:
    unknown = [n for n in names if variant(n) is None]
    if unknown:
        raise ValueError(f"unknown rows {unknown}; known: {list(VARIANTS)} and {TAU_ROW}<T> for a threshold T in [0, 1]")
    if "baseline" not in names:
        names = ["baseline", *names]
    return [variant(n) for n in names]
