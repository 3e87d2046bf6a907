"""The one answer normaliser: what voting (curation), scoring (benchmarks) and judging compare.

`final_answer` finds the answer part of a generation: the conclusion body of a step-by-step answer
(else the whole text), then what follows the first "the answer is" / "answer:" anywhere in it.
`normalise_answer` reduces that part to a comparison key: lowercase, punctuation and articles
removed, number words written as digits, single spaces. So "I think the answer is 3", "three",
"3" and "The answer is Three." all give "3".
"""
from __future__ import annotations

import re
import string

from sicog.data.formats import COT_HEADINGS, step_body

# zero to twenty: the words the world writes counts with (sicog.world.vocab) and reads back
NUMBER_WORDS: tuple[str, ...] = tuple(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split()
)
_TENS = {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90, "hundred": 100}
NUMBER_VALUES: dict[str, str] = {w: str(i) for i, w in enumerate(NUMBER_WORDS)}
NUMBER_VALUES.update({w: str(v) for w, v in _TENS.items()})

_ARTICLES = frozenset({"a", "an", "the"})
_PUNCT = str.maketrans({c: " " for c in string.punctuation})
_ANSWER_IS = re.compile(
    r"\b(?:the\s+)?(?:final\s+|correct\s+)?answer\s*(?:is|:)\s*:?\s*(.+)$", re.IGNORECASE | re.DOTALL,
)


def final_answer(text: str) -> str:
    """The answer part of a generation: the conclusion body of a step-by-step answer, else the
    text; everything up to the first "the answer is" (or "answer:") is dropped."""
    text = (text or "").strip()
    body = step_body(text, len(COT_HEADINGS))
    if body:
        text = body
    m = _ANSWER_IS.search(text)
    return (m.group(1) if m else text).strip()


def normalise_answer(text: str) -> str:
    """The comparison key of an answer: `final_answer(text)` lowercased, punctuation and articles
    removed, number words as digits, whitespace collapsed."""
    words = final_answer(text).lower().translate(_PUNCT).split()
    return " ".join(NUMBER_VALUES.get(w, w) for w in words if w not in _ARTICLES)
