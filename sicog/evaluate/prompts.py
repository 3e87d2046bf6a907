"""Evaluation prompts: one place builds the user turn for every benchmark question.

Both `sicog evaluate` and the VLMEvalKit adapter call these functions, so a checkpoint sees the
same text whichever runner evaluates it.
"""
from __future__ import annotations

import string

from sicog.data.formats import CAPTION_PROMPTS, IMAGE_TOKEN, SHORT_ANSWER_PHRASE, strip_image_token
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
    """`question`, `sep`, `suffix`.

    Short-answer and yes/no questions take the suffix after a space, multiple choice on its own
    line after the options: the layout of the world's training questions and of LLaVA.
    """
    return f"{question.strip()}{sep}{suffix}"


def multiple_choice_text(question: str, options: dict[str, str], suffix: str) -> str:
    """Question, one `A. text` line per option, then the suffix line."""
    return "\n".join([question.strip(), *(f"{k}. {v}" for k, v in options.items()), suffix])


def bare_question(question: str, options: dict[str, str] | None, instructions) -> str:
    """The question alone: without `<image>`, a trailing answer instruction, or trailing option lines.

    The world poses its questions ready to answer (options and instruction included); evaluation
    rebuilds them from the bare question so that the pinned suffixes of the eval config apply.
    """
    q = strip_image_token(question).strip()
    for instruction in sorted(set(instructions), key=len, reverse=True):
        if q.endswith(instruction):
            q = q[: -len(instruction)].rstrip()
            break
    if options:
        lines = q.splitlines()
        option_lines = [f"{k}. {v}" for k, v in options.items()]
        if len(lines) > len(option_lines) and lines[-len(option_lines):] == option_lines:
            q = "\n".join(lines[: -len(option_lines)]).rstrip()
    return q


def known_instructions(cfg: EvalConfig) -> list[str]:
    """Answer instructions that may end a posed question: the config's suffixes and the LLaVA phrase."""
    return [*cfg.suffix.values(), SHORT_ANSWER_PHRASE]


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
    qtype = question_type(record, benchmark)
    options = option_map(record["options"]) if qtype == "multiple_choice" else None
    question = bare_question(str(record.get("question") or ""), options, known_instructions(cfg))
    if not question:
        raise ValueError("record has no question")
    if options:
        body = multiple_choice_text(question, options, cfg.suffix[qtype])
    else:
        body = with_suffix(question, cfg.suffix[qtype])
    return f"{IMAGE_TOKEN}\n{body}"
