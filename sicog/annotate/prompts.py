"""The teacher's prompts for CoD annotation (SPEC section 2)."""
from __future__ import annotations

from sicog.data.formats import COD_HEADINGS


def _step_lines() -> str:
    return "\n".join(f"Step {k}: {heading}" for k, heading in enumerate(COD_HEADINGS, 1))


COD_SYSTEM_PROMPT = (
    "You write image descriptions for training a vision-language model. You receive an image, a "
    "question about it and an original description that may be incomplete or partly wrong. Look at "
    "the image yourself and write a new description that reasons through it in five steps.\n\n"
    "Rules:\n"
    "1. Cover every visible detail that is relevant to the image.\n"
    "2. Do not add anything imaginary: describe only what can be seen.\n"
    "3. Use context from the original description only where it agrees with what is visible.\n"
    "4. Make no assumptions beyond the visual evidence.\n\n"
    "Write exactly these five steps, in this order, each as the line `Step k: <heading>` "
    "followed by its text on the next line, with a blank line between steps:\n"
    f"{_step_lines()}\n\n"
    f"Steps 1 to {len(COD_HEADINGS) - 1} take one or two sentences each. Step {len(COD_HEADINGS)} is "
    "the complete description in one or two paragraphs. Write nothing before Step 1 or after "
    f"Step {len(COD_HEADINGS)}."
)


def cod_user_text(question: str, caption: str) -> str:
    """The text part of the user turn; the image travels beside it as a data URL."""
    return f"Question: {question}\n\nOriginal description: {caption}"


def cod_messages(question: str, caption: str, image_url: str) -> list[dict]:
    """Chat-completions messages for one record."""
    return [
        {"role": "system", "content": COD_SYSTEM_PROMPT},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": cod_user_text(question, caption)},
                {"type": "image_url", "image_url": {"url": image_url}},
            ],
        },
    ]
