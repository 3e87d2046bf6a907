"""The teacher's prompts for CoD annotation (SPEC section 2)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


COD_USER_TEMPLATE = "Question: {question}\n\nOriginal description: {caption}"


@dataclass(frozen=True)
class CodRequest:
    """What is sent to the teacher for one record, beside the image.

    `system`: the system prompt; `prefill`: an assistant turn after the user turn (None: none);
    `user_template`: the user text, with `{question}` (the question without `<image>`) and
    `{caption}` (the original description). Defaults are this project's own wording; `from_files`
    reads a user's (e.g. the paper's request, whose user text is
    `Question: <image>\n{question}\n\nOriginal description: {caption}` after a long system prompt and
    with an assistant prefill).
    """

    system: str = COD_SYSTEM_PROMPT
    prefill: str | None = None
    user_template: str = COD_USER_TEMPLATE

    def __post_init__(self):
        for field in ("{question}", "{caption}"):
            if self.user_template.count(field) != 1:
                raise ValueError(f"the user template must contain {field} exactly once")
        if not self.system.strip():
            raise ValueError("the system prompt is empty")
        if self.prefill is not None and not self.prefill.strip():
            raise ValueError("the prefill is empty")

    @classmethod
    def from_files(cls, system: str | Path | None = None, prefill: str | Path | None = None,
                   user_template: str | Path | None = None) -> "CodRequest":
        """Texts from UTF-8 files, read as written except for one final newline; None keeps the default."""
        def read(path):
            p = Path(path)
            if not p.is_file():
                raise ValueError(f"prompt file not found: {p}")
            text = p.read_text(encoding="utf-8")
            return text[:-1] if text.endswith("\n") else text

        return cls(system=read(system) if system else COD_SYSTEM_PROMPT,
                   prefill=read(prefill) if prefill else None,
                   user_template=read(user_template) if user_template else COD_USER_TEMPLATE)

    def user_text(self, question: str, caption: str) -> str:
        return self.user_template.replace("{question}", question).replace("{caption}", caption)

    def messages(self, question: str, caption: str, image_url: str) -> list[dict]:
        """Chat-completions messages for one record; the image travels beside the text as a data URL."""
        out = [
            {"role": "system", "content": self.system},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": self.user_text(question, caption)},
                    {"type": "image_url", "image_url": {"url": image_url}},
                ],
            },
        ]
        if self.prefill is not None:
            out.append({"role": "assistant", "content": self.prefill})
        return out


def cod_user_text(question: str, caption: str) -> str:
    """The text part of the default user turn."""
    return CodRequest().user_text(question, caption)


def cod_messages(question: str, caption: str, image_url: str, request: CodRequest | None = None) -> list[dict]:
    """Chat-completions messages for one record (the default request unless one is given)."""
    return (request or CodRequest()).messages(question, caption, image_url)
