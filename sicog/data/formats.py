"""The exact text formats of SICOG (SPEC section 2): step headings, prompts and step parsing.

Every other module builds and reads captions and answers through this file, so the strings live
in one place.
"""
from __future__ import annotations

import re

from sicog.data.tokens import IMAGE_TOKEN  # noqa: F401  (re-exported: the prompts use it)

COD_HEADINGS: tuple[str, ...] = (
    "Extract salient content by identifying the key elements that define the image or document.",
    "Analyze detailed information, focusing on instance-level attributes such as low-level and "
    "fine-grained details, such as specific text, layout.",
    "Consider relational-level attributes, analyzing interactions between elements and their "
    "spatial organization.",
    "Examine marginal or peripheral content to ensure no important information is missed.",
    "Organize all observations into a detailed, cohesive description.",
)

COT_HEADINGS: tuple[str, ...] = (
    "Clarify the task objective.",
    "Extract the crucial visual information from the image.",
    "Generate detailed reasoning to solve the task.",
    "Conclude the task with an answer.",
)

# LLaVA-CoT tags in the order of COT_HEADINGS.
COT_TAGS: tuple[str, ...] = ("SUMMARY", "CAPTION", "REASONING", "CONCLUSION")

SHORT_ANSWER_PHRASE = "Answer the question using a single word or phrase."
STEP_BY_STEP_PHRASE = "Answer the question step-by-step."
# The two CoD suffixes differ by a hyphen, as in the authors' code (SPEC section 2): the annotated
# CoD training data asks "step by step"; the generation prompts (cod-default, cod-conv) ask
# "step-by-step". Each string is written only here.
COD_ANNOTATION_SUFFIX = " Describe the image step by step."
COD_PROMPT_SUFFIX = " Describe the image step-by-step."

CAPTION_PROMPTS: dict[str, str] = {
    "cod-default": "Please generate a detailed caption of this image." + COD_PROMPT_SUFFIX,
    "default": "Please generate a detailed caption of this image. Be as descriptive as possible.",
}

# `Step 3:`, `**Step 3**:`, `**Step 3:**`, `### Step 3:`, `Step 3 -`, `step 3.` at a line start.
_STEP_RE = re.compile(
    r"^[ \t>#*_]*step[ \t]*(\d+)[ \t]*(?:\*\*|__)?[ \t]*[:.\-)][ \t]*(?:\*\*|__)?[ \t]*",
    re.IGNORECASE | re.MULTILINE,
)


def format_steps(headings: tuple[str, ...] | list[str], bodies: list[str]) -> str:
    """Join step headings and bodies in the SPEC layout: `Step k: <heading>\\n<body>`, blank-line separated."""
    if len(headings) != len(bodies):
        raise ValueError(f"{len(headings)} headings but {len(bodies)} bodies")
    return "\n\n".join(f"Step {k}: {h}\n{b.strip()}" for k, (h, b) in enumerate(zip(headings, bodies), 1))


def parse_steps(text: str) -> dict[int, tuple[str, str]]:
    """Split a step-formatted text into {k: (heading, body)}.

    Tolerates markdown variants of the step marker. The heading is the rest of the marker line;
    when the marker line carries no text the heading is empty and the body starts on the next line.
    A repeated step number keeps its first occurrence.
    """
    matches = list(_STEP_RE.finditer(text or ""))
    steps: dict[int, tuple[str, str]] = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        chunk = text[m.end():end]
        first, _, rest = chunk.partition("\n")
        k = int(m.group(1))
        if k not in steps:
            steps[k] = (first.strip().strip("*_").strip(), rest.strip())
    return steps


def _norm(s: str) -> str:
    return re.sub(r"[\s*_#]+", " ", s).strip().lower().rstrip(".")


def check_steps(text: str, headings: tuple[str, ...] | list[str]) -> str | None:
    """None if `text` has exactly steps 1..n with the given headings and non-empty bodies, else a reason."""
    steps = parse_steps(text)
    n = len(headings)
    if not steps:
        return "no step markers"
    if sorted(steps) != list(range(1, n + 1)):
        return f"expected steps 1..{n}, found {sorted(steps)}"
    for k, heading in enumerate(headings, 1):
        got, body = steps[k]
        if _norm(got) != _norm(heading):
            return f"step {k} heading mismatch: {got[:80]!r}"
        if not body:
            return f"step {k} has an empty body"
    return None


def normalise_steps(text: str, headings: tuple[str, ...] | list[str]) -> str:
    """Rewrite a tolerantly-formatted step text into the exact SPEC layout (raises if it does not check)."""
    reason = check_steps(text, headings)
    if reason:
        raise ValueError(reason)
    steps = parse_steps(text)
    return format_steps(headings, [steps[k][1] for k in range(1, len(headings) + 1)])


def step_body(text: str, k: int) -> str | None:
    """Body of step k, or None when the text has no such step."""
    step = parse_steps(text).get(k)
    return step[1] if step else None


def cod_to_dd(caption: str) -> str | None:
    """The DD (detailed description) form of a CoD caption: its step-5 body."""
    return step_body(caption, len(COD_HEADINGS))


def final_part(text: str, kind: str) -> str:
    """The part of a candidate compared by self-consistency.

    kind "cod": the step-5 body; "cot": the step-4 body; anything else, or a text missing that step:
    the whole text.
    """
    k = {"cod": len(COD_HEADINGS), "cot": len(COT_HEADINGS)}.get(kind)
    if k is not None:
        body = step_body(text, k)
        if body:
            return body
    return (text or "").strip()


def to_step_by_step_question(question: str) -> str:
    """Rewrite a short-answer question into its step-by-step form (SPEC section 2)."""
    if SHORT_ANSWER_PHRASE in question:
        return question.replace(SHORT_ANSWER_PHRASE, STEP_BY_STEP_PHRASE)
    if STEP_BY_STEP_PHRASE in question:
        return question
    return question.rstrip() + " " + STEP_BY_STEP_PHRASE


def strip_image_token(text: str) -> str:
    """The text without `<image>`, ends stripped (inner whitespace kept, as the authors' scripts do)."""
    return text.replace(IMAGE_TOKEN, "").strip()


def first_human_turn(record: dict) -> str | None:
    for turn in record.get("conversations") or []:
        if turn.get("from") == "human":
            return turn.get("value")
    return None


def generation_prompt(record: dict, task: str, prompt: str) -> str:
    """The user turn (with its leading `<image>\\n`) used to generate for `record`.

    task "caption": prompts `cod-default`, `default`, `cod-conv`; task "reasoning": `cot-default`,
    `default`. The strings equal the authors' scripts' (pinned by tests/test_authors_prompts.py). Raises ValueError with the reason when the record cannot give a prompt.
    """
    if task == "caption":
        if prompt in CAPTION_PROMPTS:
            body = CAPTION_PROMPTS[prompt]
        elif prompt == "cod-conv":
            turn = first_human_turn(record)
            if not turn or not strip_image_token(turn):
                raise ValueError("no human turn to build a cod-conv prompt from")
            body = strip_image_token(turn) + COD_PROMPT_SUFFIX
        else:
            raise ValueError(f"unknown caption prompt {prompt!r}; use cod-default, default or cod-conv")
    elif task == "reasoning":
        turn = first_human_turn(record)
        if not turn or not strip_image_token(turn):
            raise ValueError("no question (first human turn) in record")
        question = strip_image_token(turn)
        if prompt == "cot-default":
            body = question
        elif prompt == "default":
            # only the phrase goes: option lines and the space before the phrase stay as they are
            body = question.replace(STEP_BY_STEP_PHRASE, "")
        else:
            raise ValueError(f"unknown reasoning prompt {prompt!r}; use cot-default or default")
    else:
        raise ValueError(f"unknown task {task!r}; use caption or reasoning")
    return f"{IMAGE_TOKEN}\n{body}"
