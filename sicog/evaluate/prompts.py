"""Evaluation prompts: one place builds the user turn for every benchmark question.

Both `sicog evaluate` and the VLMEvalKit adapter call these functions, so a checkpoint sees the
same text whichever runner evaluates it.
"""
from __future__ import annotations

import string

from sicog.data.formats import CAPTION_PROMPTS, IMAGE_TOKEN, strip_image_token
from sicog.evaluate.settings import EvalConfig


def option_map(options) -> dict[str, str]:
    """Options as {letter: text}: from a list (lettered A, B, ...) or a {letter: text} dict."""
    if isinstance(options, dict):
        out = {str(k).strip().upper(): str(v) for k, v in options.items()}
    elif isinstance(options, (list, tuple)):
        if len(options) > len(string.ascii_uppercase):
            raise ValueError(f"{len(options)} options; at most 26 supported")
        out = {string.ascii_uppercase[i]: str(v) for i, v in enumerate(options)}
    else:
        raise ValueError(f"options must be a list or a dict, got {type(options).__name__}")
    bad = [k for k in out if len(k) != 1 or k not in string.ascii_uppercase]
    if bad:
        raise ValueError(f"option keys must be single letters, got {bad}")
    return out


def with_suffix(question: str, suffix: str, sep: str = " ") -> str:
    """`question`, `sep`, `suffix` (not repeated when the question already ends with the suffix).

    Short-answer and yes/no questions take the suffix after a space, multiple choice on its own
    line after the options: the layout of the world's training questions and of LLaVA.
    """
    q = question.strip()
    if q.endswith(suffix):
        return q
    return f"{q}{sep}{suffix}"


def multiple_choice_text(question: str, options: dict[str, str], suffix: str) -> str:
    """Question, one `A. text` line per option (unless the question lists them already), then the suffix line."""
    q = question.strip()
    option_lines = [f"{k}. {v}" for k, v in options.items()]
    if q.endswith(suffix):
        q = q[: -len(suffix)].rstrip()
    if q.splitlines()[-len(option_lines):] != option_lines:
        q = "\n".join([q, *option_lines])
    return with_suffix(q, suffix, sep="\n")


def question_type(record: dict, benchmark: str) -> str:
    """`multiple_choice`, `short_answer` or `yes_no` for a benchmark record."""
    if benchmark == "pope":
        return "yes_no"
    if benchmark == "qa":
        return "multiple_choice" if record.get("options") else "short_answer"
    raise ValueError(f"{benchmark!r} records have no question type")


def eval_prompt(record: dict, benchmark: str, cfg: EvalConfig) -> str:
    """The user turn (with its leading `<image>\\n`) for a benchmark record; ValueError when it has no question."""
    if benchmark == "captions":
        return f"{IMAGE_TOKEN}\n{CAPTION_PROMPTS[cfg.caption_prompt]}"
    question = strip_image_token(str(record.get("question") or ""))
    if not question:
        raise ValueError("record has no question")
    qtype = question_type(record, benchmark)
    if qtype == "multiple_choice":
        body = multiple_choice_text(question, option_map(record["options"]), cfg.suffix[qtype])
    else:
        body = with_suffix(question, cfg.suffix[qtype])
    return f"{IMAGE_TOKEN}\n{body}"
