"""Reading candidate files (the generation engine's output) into checked inputs for curation.

A candidate file is JSONL (or a JSON list), one line per input: the input record plus `prompt`
(the exact user turn), `candidates` (N strings) and `generation` (task, prompt_name, model,
sampling settings, augment). Every line that cannot be curated becomes a reject with its reason;
nothing here raises on bad data except an unreadable JSON-list file as a whole.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from sicog.data.formats import (
    COD_HEADINGS,
    COT_HEADINGS,
    IMAGE_TOKEN,
    check_steps,
    final_part,
    generation_prompt,
    normalise_steps,
    strip_image_token,
)
from sicog.data.records import _decode

KINDS = ("cod", "cot", "plain")
_HEADINGS = {"cod": COD_HEADINGS, "cot": COT_HEADINGS}


@dataclass
class CandidateInput:
    """One input of a candidate file, checked and ready to score."""

    id: str
    line: int
    record: dict
    prompt: str
    kind: str
    candidates: list  # as read (may hold empty strings or non-strings)
    usable: list[int] = field(default_factory=list)  # indices of non-empty string candidates
    generation: dict | None = None

    @property
    def image(self) -> str | None:
        image = self.record.get("image")
        return image if isinstance(image, str) and image else None

    def compared_parts(self) -> list[str]:
        """The part of each usable candidate that self-consistency compares (SPEC: step 5 of CoD,
        step 4 of CoT, the whole text otherwise)."""
        return [final_part(self.candidates[i], self.kind) for i in self.usable]

    def full_text(self, index: int) -> str:
        """A candidate as it goes into training data and preference pairs: step texts that check
        are rewritten into the exact SPEC layout (tolerating markdown variants); any other text is
        kept as generated, stripped."""
        return full_text(self.candidates[index], self.kind)

    def duplicates(self) -> int:
        """How many usable candidates repeat the text of an earlier one."""
        texts = [self.candidates[i].strip() for i in self.usable]
        return len(texts) - len(set(texts))


def full_text(text: str, kind: str) -> str:
    headings = _HEADINGS.get(kind)
    if headings is not None and check_steps(text, headings) is None:
        return normalise_steps(text, headings)
    return text.strip()


def is_step_formatted(text: str, kind: str) -> bool:
    headings = _HEADINGS.get(kind)
    return headings is not None and check_steps(text, headings) is None


def infer_kind(generation: dict | None) -> str:
    """`cod`, `cot` or `plain` from the generation metadata; raises ValueError with the reason."""
    if not isinstance(generation, dict):
        raise ValueError("missing 'generation' metadata: cannot infer --kind (pass --kind cod|cot|plain)")
    task, prompt_name = generation.get("task"), generation.get("prompt_name")
    if task == "caption":
        if prompt_name in ("cod-default", "cod-conv"):
            return "cod"
        if prompt_name == "default":
            return "plain"
    elif task == "reasoning":
        if prompt_name == "cot-default":
            return "cot"
        if prompt_name == "default":
            return "plain"
    raise ValueError(f"cannot infer --kind from generation task={task!r} prompt_name={prompt_name!r}")


def _user_turn(record: dict) -> str:
    """The human turn for training data: the record's generation prompt, rebuilt from the
    generation metadata when the line lacks it. Text-only records lose the image token."""
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        generation = record.get("generation") or {}
        if not isinstance(generation, dict) or not generation.get("task") or not generation.get("prompt_name"):
            raise ValueError("no 'prompt' and no generation task/prompt_name to rebuild it")
        prompt = generation_prompt(record, generation["task"], generation["prompt_name"])
    image = record.get("image")
    if not (isinstance(image, str) and image):
        prompt = strip_image_token(prompt)
        if not prompt:
            raise ValueError("prompt is empty once the image token is removed (record has no image)")
    elif IMAGE_TOKEN not in prompt:
        prompt = f"{IMAGE_TOKEN}\n{prompt.strip()}"
    return prompt


def check_input(record: dict, line: int, kind: str, seen: set[str]) -> CandidateInput:
    """Check one parsed line; raises ValueError with the reason it cannot be curated."""
    rid = record.get("id")
    if rid is None or (isinstance(rid, str) and not rid.strip()) or isinstance(rid, (dict, list)):
        raise ValueError("missing or invalid 'id'")
    rid = str(rid)
    if rid in seen:
        raise ValueError(f"duplicate id {rid!r}")
    if "image" in record and not (isinstance(record["image"], str) and record["image"]):
        raise ValueError("'image' is present but not a non-empty string")
    candidates = record.get("candidates")
    if not isinstance(candidates, list):
        raise ValueError("missing 'candidates' list")
    resolved = infer_kind(record.get("generation")) if kind == "auto" else kind
    prompt = _user_turn(record)
    usable = [i for i, c in enumerate(candidates) if isinstance(c, str) and c.strip()]
    if not usable:
        raise ValueError(f"no non-empty candidate (of {len(candidates)})")
    base = {k: v for k, v in record.items() if k not in ("candidates", "prompt", "generation")}
    generation = record.get("generation") if isinstance(record.get("generation"), dict) else None
    return CandidateInput(rid, line, base, prompt, resolved, candidates, usable, generation)


def read_rows(path: str | os.PathLike, what: str = "file") -> list[tuple[int, object, str | None]]:
    """`(line, parsed value, error)` per non-blank line of a JSONL file, or per item of a JSON list.

    A malformed JSONL line gives an error string instead of raising, so it can be rejected alone;
    a JSON list must parse as a whole (ValueError naming the file otherwise).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such {what}: {p}")
    with p.open("rb") as f:
        head = f.read(4096).lstrip()
        f.seek(0)
        if head.startswith(b"["):
            try:
                data = json.loads(_decode(f.read(), p, 0))
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}: not a valid JSON list ({e})") from None
            return [(i + 1, value, None) for i, value in enumerate(data)]
        rows: list[tuple[int, object, str | None]] = []
        for lineno, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:  # this line alone is rejected, never read with replaced bytes
                rows.append((lineno, None, f"not UTF-8 text (byte 0x{raw[e.start]:02x})"))
                continue
            if text.strip():
                try:
                    rows.append((lineno, json.loads(text), None))
                except json.JSONDecodeError as e:
                    rows.append((lineno, None, f"malformed JSON ({e.msg})"))
        return rows


def load_candidates(path: str | os.PathLike, kind: str = "auto") -> tuple[list[CandidateInput], list[dict], list[dict]]:
    """Checked inputs, rejects (`{id, line, reason}`) and the distinct generation metadata seen.

    JSONL files are read line by line so one malformed line is rejected, not fatal; a JSON list
    must parse as a whole.
    """
    if kind not in KINDS + ("auto",):
        raise ValueError(f"unknown kind {kind!r}; use auto, cod, cot or plain")
    parsed = read_rows(path, "candidate file")
    inputs: list[CandidateInput] = []
    rejects: list[dict] = []
    generations: list[dict] = []
    seen: set[str] = set()
    generation_keys: set[str] = set()
    for lineno, rec, error in parsed:
        if error is None and not isinstance(rec, dict):
            error = "not a JSON object"
        if error is not None:
            rejects.append({"id": None, "line": lineno, "reason": error})
            continue
        try:
            item = check_input(rec, lineno, kind, seen)
        except ValueError as e:
            rid = rec.get("id")
            rejects.append({"id": None if rid is None else str(rid), "line": lineno, "reason": str(e)})
            continue
        seen.add(item.id)
        inputs.append(item)
        if item.generation is not None:
            key = json.dumps(item.generation, sort_keys=True, default=str)
            if key not in generation_keys:
                generation_keys.add(key)
                generations.append(item.generation)
    return inputs, rejects, generations
