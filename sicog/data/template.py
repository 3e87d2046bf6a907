"""The `qwen_1_5` chat template (SPEC section 2) and its labels.

The rendered text is

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
    <|im_start|>user\\n<image>\\n{question}<|im_end|>\\n
    <|im_start|>assistant\\n{answer}<|im_end|>\\n ...

(no line breaks other than the `\\n`s). The whole text is tokenized in one call and every token
is labelled by the character span it covers, so labels always agree with the tokenization.

Label modes:
- "authors" (default, as the authors trained): each assistant turn is supervised including its
  `<|im_start|>assistant\\n` header and its trailing `<|im_end|>\\n`; in addition every token
  that is exactly `\\n`, `<|im_start|>` or `<|im_end|>` is supervised wherever it occurs.
- "assistant": only each assistant turn's content and its closing `<|im_end|>`.
In both modes the `<image>` token (and, after expansion, every image and separator position) is
-100.

Before rendering, turns are prepared as the authors' data path does (`prepare_turns`): a
conversation that starts with an assistant turn loses that turn, and a turn whose single
`<image>` is not at its start gets it moved there, followed by `\n` (LLaVA-665K style records).
"""
from __future__ import annotations

from dataclasses import dataclass

from sicog.data.tokens import ENDOFTEXT, IM_END, IM_START, SYSTEM_PROMPT  # noqa: F401  (SYSTEM_PROMPT re-exported)
from sicog.data.tokens import IMAGE_TOKEN as IMAGE

IGNORE_INDEX = -100
MASK_MODES = ("authors", "assistant")
ROLES = {"human": "user", "gpt": "assistant"}


@dataclass
class RenderedChat:
    text: str
    spans: list[tuple[int, int]]        # supervised character spans [start, end)


def validate_conversations(conversations, add_generation_prompt: bool = False) -> None:
    """Raise ValueError with the reason when `conversations` is not a usable list of LLaVA turns."""
    if not isinstance(conversations, (list, tuple)) or not conversations:
        raise ValueError("conversations must be a non-empty list of turns")
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict) or turn.get("from") not in ROLES or not isinstance(turn.get("value"), str):
            raise ValueError(f"turn {i} must be {{'from': 'human'|'gpt', 'value': str}}, got {turn!r:.200}")
        for special in (IM_START, IM_END, ENDOFTEXT):
            if special in turn["value"]:
                raise ValueError(f"turn {i} contains the reserved token {special}")
        if turn["from"] == "gpt" and IMAGE in turn["value"]:
            raise ValueError(f"turn {i}: {IMAGE} may only appear in a human turn")
    if add_generation_prompt and conversations[-1]["from"] != "human":
        raise ValueError("add_generation_prompt needs conversations that end with a human turn")


def prepare_turns(conversations) -> list[dict]:
    """The turns as rendered: a leading assistant turn dropped, a lone `<image>` moved to the turn's start.

    A turn with one `<image>` elsewhere becomes `<image>\n` + the rest with the marker removed and
    the ends stripped (inner whitespace is kept). Other turns are returned unchanged.
    """
    turns = list(conversations)
    if turns and turns[0]["from"] != "human":
        turns = turns[1:]
        if not turns:
            raise ValueError("the conversation has only an assistant turn")
    out = []
    for turn in turns:
        value = turn["value"]
        if value.count(IMAGE) == 1 and not value.startswith(IMAGE):
            turn = {**turn, "value": f"{IMAGE}\n{value.replace(IMAGE, '').strip()}".strip()}
        out.append(turn)
    return out


def render(conversations, mask_mode: str = "authors", add_generation_prompt: bool = False,
           system: str = SYSTEM_PROMPT) -> RenderedChat:
    """The ChatML text and the character spans that are supervised (before the special-token rule)."""
    if mask_mode not in MASK_MODES:
        raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {mask_mode!r}")
    validate_conversations(conversations, add_generation_prompt)
    conversations = prepare_turns(conversations)
    parts = [f"{IM_START}system\n{system}{IM_END}\n"]
    length = len(parts[0])
    spans: list[tuple[int, int]] = []
    for turn in conversations:
        role = ROLES[turn["from"]]
        header = f"{IM_START}{role}\n"
        piece = f"{header}{turn['value']}{IM_END}\n"
        if role == "assistant" and not add_generation_prompt:
            if mask_mode == "authors":
                spans.append((length, length + len(piece)))
            else:
                spans.append((length + len(header), length + len(piece) - 1))
        parts.append(piece)
        length += len(piece)
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
    return RenderedChat("".join(parts), spans)


def chatml(question: str, answer: str, system: str = SYSTEM_PROMPT) -> str:
    """One question and its answer as ChatML text (system turn first): the text `render` and the
    tokenizer's chat template both write."""
    return render([{"from": "human", "value": question}, {"from": "gpt", "value": answer}], system=system).text


def newline_and_chat_ids(tokenizer) -> set[int]:
    """Ids the authors' masking leaves supervised everywhere: `\\n`, `<|im_start|>`, `<|im_end|>`."""
    nl = tokenizer.encode("\n", add_special_tokens=False)
    if len(nl) != 1:
        raise ValueError(f"the tokenizer splits '\\n' into {len(nl)} tokens")
    return {nl[0], tokenizer.convert_tokens_to_ids(IM_START), tokenizer.convert_tokens_to_ids(IM_END)}


def encode_chat(tokenizer, conversations, mask_mode: str = "authors", add_generation_prompt: bool = False,
                system: str = SYSTEM_PROMPT) -> tuple[list[int], list[int]]:
    """Token ids and labels of a conversation (the `<image>` token kept as one id, label -100)."""
    chat = render(conversations, mask_mode, add_generation_prompt, system)
    enc = tokenizer(chat.text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    if add_generation_prompt:
        return ids, [IGNORE_INDEX] * len(ids)
    always = newline_and_chat_ids(tokenizer) if mask_mode == "authors" else set()
    image_id = tokenizer.convert_tokens_to_ids(IMAGE)
    labels = [IGNORE_INDEX] * len(ids)
    spans = chat.spans
    for i, (tid, (s, e)) in enumerate(zip(ids, enc["offset_mapping"])):
        if tid == image_id:
            continue
        if tid in always or any(s < b and e > a for a, b in spans):
            labels[i] = tid
    return ids, labels


def count_chat_tokens(tokenizer, conversations, add_generation_prompt: bool = False,
                      system: str = SYSTEM_PROMPT) -> int:
    chat = render(conversations, "assistant", add_generation_prompt, system)
    return len(tokenizer(chat.text, add_special_tokens=False)["input_ids"])
