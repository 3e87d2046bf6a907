"""Is a generated answer right? The checks the benchmark scorers and the judge share.

Multiple choice by the option letter read from "B", "(B)", "B. red", "The answer is B" or the
option's text; yes/no by the yes/no read from the answer; short answers by the one normalised key
of `sicog.data.answers` (the key curation votes with). A step-by-step answer is checked on the
body of its conclusion step.
"""
from __future__ import annotations

import re
import string

from sicog.data.answers import final_answer, normalise_answer


def extract_choice(text: str, options: list[str] | dict) -> str | None:
    """The option letter a generation chose, or None."""
    opts = options if isinstance(options, dict) else {string.ascii_uppercase[i]: o for i, o in enumerate(options)}
    letters = "".join(opts)
    answer = final_answer(text)
    patterns = (
        rf"^\(([{letters}])\)",               # (B) ...
        rf"^([{letters}])(?:[.:)]|\s*$)",     # B / B. red / B) / B:
        rf"\boption\s*\(?([{letters}])\)?(?:[.:)\s]|$)",
    )
    for pattern in patterns:
        m = re.search(pattern, answer)
        if m:
            return m.group(1)
    norm = normalise_answer(answer)
    for letter, option in opts.items():
        if norm and norm == normalise_answer(str(option)):
            return letter
    return None


def yes_no(text: str) -> str | None:
    """"yes", "no" or None: the first yes/no word of the answer, else any no/not, else any yes."""
    words = normalise_answer(text).split()
    if not words:
        return None
    if words[0] in ("yes", "no"):
        return words[0]
    if "no" in words or "not" in words:
        return "no"
    if "yes" in words:
        return "yes"
    return None


def qa_correct(text: str, record: dict) -> bool:
    """Whether `text` answers the QA record (`answer`, and `options` for multiple choice)."""
    gold = str(record.get("answer", "")).strip()
    if record.get("options"):
        return extract_choice(text, record["options"]) == gold.upper()
    if gold.lower() in ("yes", "no"):
        return yes_no(text) == gold.lower()
    answer = normalise_answer(text)
    return bool(answer) and answer == normalise_answer(gold)
