"""What `sicog annotate-cod` reads and writes per record: the input items, the CoD and DD records
built from a teacher's answer, the failure lines, and the progress and failures files a rerun
resumes from (their layout: `sicog.annotate.cod`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sicog.annotate.client import Usage
from sicog.data.checks import InputError
from sicog.data.formats import (
    COD_ANNOTATION_SUFFIX,
    COD_HEADINGS,
    IMAGE_TOKEN,
    cod_to_dd,
    first_human_turn,
    normalise_steps,
    strip_image_token,
)
from sicog.data.records import JsonlAppender, read_input_records, read_records, record_id, write_jsonl

PROGRESS_FILE = "annotate_progress.jsonl"
FAILURES_FILE = "annotate_failures.jsonl"
RETRIED_FILE = "annotate_retried_failures.jsonl"
SUMMARY_FILE = "annotate_summary.json"
COD_FILE = "cod.jsonl"
DD_FILE = "dd.jsonl"


@dataclass(frozen=True)
class Item:
    id: str
    image: str | None
    question: str | None
    caption: str | None


def to_item(record: dict, index: int) -> Item:
    question = record.get("question")
    if not isinstance(question, str):
        turn = first_human_turn(record)
        question = strip_image_token(turn) if isinstance(turn, str) else None
    caption = record.get("caption")
    if not isinstance(caption, str):
        caption = next(
            (t.get("value") for t in record.get("conversations") or [] if isinstance(t, dict) and t.get("from") == "gpt"),
            None,
        )
    image = record.get("image")
    return Item(
        id=record_id(record, index),
        image=image if isinstance(image, str) and image.strip() else None,
        question=question.strip() if isinstance(question, str) and question.strip() else None,
        caption=caption.strip() if isinstance(caption, str) and caption.strip() else None,
    )


def cod_record(item: Item, caption: str) -> dict:
    return {
        "id": item.id,
        "image": item.image,
        "conversations": [
            {"from": "human", "value": f"{IMAGE_TOKEN}\n{item.question}{COD_ANNOTATION_SUFFIX}"},
            {"from": "gpt", "value": caption},
        ],
    }


def dd_record(cod: dict) -> dict:
    """The DD record of a CoD record: the question without the step-by-step suffix, the step-5 body."""
    question = cod["conversations"][0]["value"]
    if question.endswith(COD_ANNOTATION_SUFFIX):
        question = question[: -len(COD_ANNOTATION_SUFFIX)]
    return {
        "id": cod["id"],
        "image": cod["image"],
        "conversations": [
            {"from": "human", "value": question},
            {"from": "gpt", "value": cod_to_dd(cod["conversations"][1]["value"])},
        ],
    }


def accept_cod(text: str) -> str:
    """The caption in the exact five-step layout; ValueError when the steps are not all there."""
    return normalise_steps(text, COD_HEADINGS)


def failure_line(item: Item, reason: str, message: str, *, status_code=None, error_class="InputError",
             attempts: int = 0, usage: Usage | None = None) -> dict:
    return {
        "id": item.id,
        "image": item.image,
        "reason": reason,
        "status_code": status_code,
        "error_class": error_class,
        "message": message,
        "attempts": attempts,
        "usage": (usage or Usage()).as_dict(),
    }


def move_failures(failures_path: Path, history_path: Path, ids: set[str]) -> int:
    """Move the failure lines of `ids` to the history file so that they are attempted again.

    The history keeps their reasons and the tokens they cost; the failures file is rewritten
    atomically. Returns how many lines moved.
    """
    if not failures_path.exists():
        return 0
    with JsonlAppender(failures_path):  # cuts a partial last line
        pass
    lines = read_records(failures_path)
    moved = [r for r in lines if str(r.get("id")) in ids]
    if moved:
        with JsonlAppender(history_path, id_key="id") as history:
            for line in moved:
                history.write(line)
        write_jsonl(failures_path, [r for r in lines if str(r.get("id")) not in ids])
    return len(moved)


def total_usage(lines: list[dict]) -> Usage:
    total = Usage()
    for line in lines:
        u = line.get("usage") or {}
        total.add(Usage(int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0))))
    return total


def load_items(path: str) -> list[Item]:
    """The input's items; InputError for a missing, unreadable or empty file, or repeated ids."""
    records = read_input_records(path, "--input")
    items = [to_item(r, i) for i, r in enumerate(records)]
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.id in first:
            raise InputError(f"--input {path}: id {item.id!r} appears at records {first[item.id]} and {i}; ids must be unique")
        first[item.id] = i
    return items


def write_outputs(items: list[Item], cod_dir: Path, dd_dir: Path) -> tuple[list[dict], int, Usage]:
    """Merged CoD and DD files in input order from the progress file, written atomically.

    Returns (CoD records, failed count, tokens of every answer recorded so far).
    """
    progress_path, failures_path, history_path = (cod_dir / PROGRESS_FILE, cod_dir / FAILURES_FILE,
                                                  cod_dir / RETRIED_FILE)
    progress = {str(r["id"]): r for r in read_records(progress_path)} if progress_path.exists() else {}
    failures = {str(r["id"]): r for r in read_records(failures_path)} if failures_path.exists() else {}
    history = read_records(history_path) if history_path.exists() else []
    cods = [progress[item.id]["cod"] for item in items if item.id in progress]
    write_jsonl(cod_dir / COD_FILE, cods)
    write_jsonl(dd_dir / DD_FILE, [dd_record(c) for c in cods])
    n_failed = sum(item.id in failures for item in items)
    return cods, n_failed, total_usage([*progress.values(), *failures.values(), *history])
