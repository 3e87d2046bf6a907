"""`sicog convert-cot`: LLaVA-CoT records to the four-step CoT file and the short-answer file.

LLaVA-CoT answers carry four tagged parts, `<SUMMARY>...</SUMMARY>`, `<CAPTION>...</CAPTION>`,
`<REASONING>...</REASONING>` and `<CONCLUSION>...</CONCLUSION>`, in that order. Every question /
answer pair of a record is converted (multi-turn records turn by turn):

  OUTPUT_COT_DIR/cot.jsonl           answers as the four steps of SPEC section 2 (bodies = the tag
                                     texts in order); questions rewritten to ask for a step-by-step
                                     answer (formats.to_step_by_step_question)
  OUTPUT_SHORT_DIR/short.jsonl       answers = the conclusion alone; questions exactly as in the
                                     input, so a short-answer phrase stays where it was
  OUTPUT_COT_DIR/cot_rejects.jsonl   {"id", "index", "reason"} for every record that could not be
                                     converted; such a record appears in neither output

A record is converted whole or not at all: one bad turn (a tag missing, empty, duplicated, out of
order, unclosed, nested, text outside the tags, a tag text that itself holds step markers) rejects
it. The input file and the loaded records are never modified; outputs are written atomically.
"""
from __future__ import annotations

import argparse
import copy
import logging
import re
from pathlib import Path

from tqdm import tqdm

from sicog.data.formats import COT_HEADINGS, COT_TAGS, format_steps, parse_steps, to_step_by_step_question
from sicog.data.checks import check_output_dir
from sicog.data.output_lock import OutputLock
from sicog.data.records import read_input_records, record_id, write_jsonl

log = logging.getLogger(__name__)

COT_FILE = "cot.jsonl"
SHORT_FILE = "short.jsonl"
REJECTS_FILE = "cot_rejects.jsonl"

_TAG_RE = re.compile(r"<(/?)(" + "|".join(COT_TAGS) + r")>")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="LLaVA-CoT records (JSON list or JSONL)")
    parser.add_argument("--output-cot-dir", required=True, help="four-step records and the rejects file")
    parser.add_argument("--output-short-dir", required=True, help="conclusion-only records")


def split_tagged_answer(text: str) -> list[str]:
    """The texts of the four tags in COT_TAGS order; ValueError naming what is wrong."""
    if not isinstance(text, str):
        raise ValueError("answer is not a string")
    marks = [(m.group(2), m.group(1) == "/", m) for m in _TAG_RE.finditer(text)]
    for tag in COT_TAGS:
        opens = sum(1 for t, closing, _ in marks if t == tag and not closing)
        closes = sum(1 for t, closing, _ in marks if t == tag and closing)
        if opens == closes == 0:
            raise ValueError(f"missing <{tag}>")
        if opens > 1 or closes > 1:
            raise ValueError(f"duplicated <{tag}>")
        if opens != closes:
            raise ValueError(f"malformed <{tag}>: " + ("no closing tag" if opens else "closing tag without opening tag"))
    paired = all(
        not marks[i][1] and marks[i + 1][1] and marks[i][0] == marks[i + 1][0] for i in range(0, len(marks), 2)
    )
    if not paired:
        found = " ".join(f"<{'/' if closing else ''}{t}>" for t, closing, _ in marks)
        raise ValueError(f"malformed tags (nested or crossed): {found}")
    order = [marks[i][0] for i in range(0, len(marks), 2)]
    if order != list(COT_TAGS):
        raise ValueError(f"tags out of order: {' '.join(order)}; expected {' '.join(COT_TAGS)}")
    bodies, outside, pos = [], [], 0
    for i in range(0, len(marks), 2):
        start, end = marks[i][2], marks[i + 1][2]
        outside.append(text[pos:start.start()])
        body = text[start.end():end.start()].strip()
        if not body:
            raise ValueError(f"empty <{marks[i][0]}>")
        bodies.append(body)
        pos = end.end()
    outside.append(text[pos:])
    stray = "".join(outside).strip()
    if stray:
        raise ValueError(f"text outside the tags: {stray[:60]!r}")
    return bodies


def four_step_answer(bodies: list[str]) -> str:
    """The SPEC four-step answer; ValueError when a body's own step markers would make it ambiguous."""
    text = format_steps(COT_HEADINGS, bodies)
    parsed = parse_steps(text)
    if sorted(parsed) != list(range(1, len(COT_HEADINGS) + 1)) or [parsed[k][1] for k in sorted(parsed)] != bodies:
        raise ValueError("a tag's text contains `Step k:` markers that would make the four steps ambiguous")
    return text


def convert_record(record: dict) -> tuple[dict, dict]:
    """(four-step record, short record), both new objects; ValueError with the reason to reject it."""
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise ValueError("no conversations")
    if len(turns) % 2:
        raise ValueError(f"{len(turns)} turns: every question needs one answer")
    long_turns: list[dict] = []
    short_turns: list[dict] = []
    for k in range(0, len(turns), 2):
        question, answer = turns[k], turns[k + 1]
        n = k // 2 + 1
        if not (isinstance(question, dict) and question.get("from") == "human"
                and isinstance(question.get("value"), str) and question["value"].strip()):
            raise ValueError(f"turn {n}: expected a non-empty human question")
        if not (isinstance(answer, dict) and answer.get("from") == "gpt"):
            raise ValueError(f"turn {n}: expected a gpt answer after the question")
        try:
            bodies = split_tagged_answer(answer.get("value"))
            long_answer = four_step_answer(bodies)
        except ValueError as e:
            raise ValueError(f"turn {n}: {e}") from None
        long_turns += [{"from": "human", "value": to_step_by_step_question(question["value"])},
                       {"from": "gpt", "value": long_answer}]
        short_turns += [{"from": "human", "value": question["value"]}, {"from": "gpt", "value": bodies[-1]}]
    rest = {key: value for key, value in record.items() if key != "conversations"}
    return ({**copy.deepcopy(rest), "conversations": long_turns},
            {**copy.deepcopy(rest), "conversations": short_turns})


def convert_records(records: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """(four-step records, short records, rejects) in input order."""
    long_out, short_out, rejects = [], [], []
    first_index: dict[str, int] = {}
    for index, record in enumerate(tqdm(records, desc="convert-cot", unit="rec")):
        rid = record_id(record, index)
        try:
            if rid in first_index:
                raise ValueError(f"duplicate id (first at record {first_index[rid]})")
            first_index[rid] = index
            long_rec, short_rec = convert_record(record)
        except ValueError as e:
            rejects.append({"id": rid, "index": index, "reason": str(e)})
            continue
        if "id" not in record:
            long_rec = {"id": rid, **long_rec}
            short_rec = {"id": rid, **short_rec}
        long_out.append(long_rec)
        short_out.append(short_rec)
    return long_out, short_out, rejects


def run(args: argparse.Namespace) -> int:
    records = read_input_records(args.input, "--input")
    cot_dir = check_output_dir(args.output_cot_dir, "--output-cot-dir")
    short_dir = check_output_dir(args.output_short_dir, "--output-short-dir")
    with OutputLock(cot_dir, "--output-cot-dir"):
        if short_dir.resolve() == cot_dir.resolve():
            return _convert(records, cot_dir, short_dir)
        with OutputLock(short_dir, "--output-short-dir"):
            return _convert(records, cot_dir, short_dir)


def _convert(records: list[dict], cot_dir: Path, short_dir: Path) -> int:
    long_out, short_out, rejects = convert_records(records)
    write_jsonl(cot_dir / COT_FILE, long_out)
    write_jsonl(short_dir / SHORT_FILE, short_out)
    write_jsonl(cot_dir / REJECTS_FILE, rejects)
    log.info("converted %d of %d records (%d rejected, reasons in %s)", len(long_out), len(records),
             len(rejects), cot_dir / REJECTS_FILE)
    if not long_out:
        log.error("no record could be converted; see %s", cot_dir / REJECTS_FILE)
        return 1
    return 0
