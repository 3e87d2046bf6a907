"""The sampling defaults of candidate generation and the names of its image corruptions: one
definition for `SamplingSettings`, `sicog.generate.augment`, the `sicog generate` flags and the
shell scripts.

The shell reads them with `python3 sicog/generate/settings.py` (or `sicog generate --print-defaults`),
which prints one `: "${VAR:=value}"` line per default under the scripts' variable names, so a value
already exported wins, and `AUGMENT_CHOICES=<the corruptions, comma-separated>`. This file needs
only the standard library, so any python3 runs it by path.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, fields


# The image corruptions of `--augment` (corrupted-image candidates, the rejected side of DPO pairs);
# sicog.generate.augment implements them.
AUGMENT_METHODS: tuple[str, ...] = ("gaussian_blur", "color_jitter", "mirror_rotation", "mask")


@dataclass(frozen=True)
class SamplingSettings:
    num_candidates: int = 6
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 0
    num_beams: int = 1
    max_new_tokens: int = 1200
    min_new_tokens: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.num_candidates >= 1, "num_candidates must be >= 1"),
            (self.temperature >= 0, "temperature must be >= 0 (0 = greedy)"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be >= 0 (0 = off)"),
            (self.num_beams >= 1, "num_beams must be >= 1"),
            (self.max_new_tokens >= 1, "max_new_tokens must be >= 1"),
            (0 <= self.min_new_tokens <= self.max_new_tokens, "min_new_tokens must be in [0, max_new_tokens]"),
            (self.num_beams == 1 or self.num_candidates <= self.num_beams,
             "with beam search, num_candidates (returned sequences) must be <= num_beams"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def as_dict(self) -> dict:
        return asdict(self)


# The stage scripts' variable for each setting (the authors' README names: TEMPERATURE, TOP_P, BEAMS).
SHELL_NAMES: dict[str, str] = {
    "num_candidates": "N_CANDIDATES", "temperature": "TEMPERATURE", "top_p": "TOP_P", "top_k": "TOP_K",
    "num_beams": "BEAMS", "max_new_tokens": "MAX_NEW_TOKENS", "min_new_tokens": "MIN_NEW_TOKENS", "seed": "SEED",
}


def shell_defaults() -> str:
    """`: "${VAR:=value}"` lines for every sampling default (a value already set is kept), then the
    `AUGMENT_CHOICES=...` line the scripts check AUGMENT_METHODS against."""
    defaults = SamplingSettings()
    lines = [f': "${{{SHELL_NAMES[f.name]}:={getattr(defaults, f.name)}}}"\n' for f in fields(defaults)]
    return "".join(lines) + f"AUGMENT_CHOICES={','.join(AUGMENT_METHODS)}\n"


if __name__ == "__main__":
    sys.stdout.write(shell_defaults())
