"""Pinned evaluation settings (`sicog/configs/eval/<version>.yaml`): decoding, prompts, batch, resize.

The file is versioned: its `version` string is written into every prediction, scores file and
summary, so two results are comparable only when their versions match.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import yaml

from sicog.config_files import named_yaml, packaged
from sicog.data.formats import CAPTION_PROMPTS

EVAL_CONFIGS_DIR = packaged("eval")
BENCHMARKS: tuple[str, ...] = ("qa", "pope", "captions")
QUESTION_TYPES: tuple[str, ...] = ("multiple_choice", "short_answer", "yes_no")


@dataclass(frozen=True)
class EvalConfig:
    version: str
    do_sample: bool
    num_beams: int
    batch_size: int
    long_side: int | str | None
    max_new_tokens: dict[str, int]
    suffix: dict[str, str]
    caption_prompt: str

    def generation_kwargs(self, benchmark: str) -> dict:
        return {
            "max_new_tokens": self.max_new_tokens[benchmark],
            "do_sample": self.do_sample,
            "num_beams": self.num_beams,
        }


def load_eval_config(name_or_path: str = "v1") -> EvalConfig:
    """The evaluation config from a version name (`v1`) or a YAML path; raises ValueError naming the problem."""
    p = named_yaml("eval", name_or_path, "eval config")
    with p.open() as f:
        raw = yaml.safe_load(f) or {}
    names = {f.name for f in fields(EvalConfig)}
    missing = sorted(names - set(raw))
    unknown = sorted(set(raw) - names)
    if missing or unknown:
        raise ValueError(f"{p}: missing keys {missing}, unknown keys {unknown}")
    cfg = EvalConfig(**raw)
    if not isinstance(cfg.version, str) or not cfg.version:
        raise ValueError(f"{p}: version must be a non-empty string")
    if set(cfg.max_new_tokens) != set(BENCHMARKS):
        raise ValueError(f"{p}: max_new_tokens must give exactly {list(BENCHMARKS)}")
    if set(cfg.suffix) != set(QUESTION_TYPES):
        raise ValueError(f"{p}: suffix must give exactly {list(QUESTION_TYPES)}")
    if cfg.caption_prompt not in CAPTION_PROMPTS:
        raise ValueError(f"{p}: caption_prompt must be one of {sorted(CAPTION_PROMPTS)}")
    if cfg.batch_size < 1 or cfg.num_beams < 1:
        raise ValueError(f"{p}: batch_size and num_beams must be >= 1")
    if not (cfg.long_side in (None, "checkpoint") or (isinstance(cfg.long_side, int) and cfg.long_side >= 14)):
        raise ValueError(f"{p}: long_side must be `checkpoint`, null or an integer >= 14")
    return cfg
