"""`sicog convert-cot`: LLaVA-CoT tags to the four-step and short formats, with rejects."""
from __future__ import annotations

import argparse
import copy
import json

import pytest

from annotate_helpers import PARTS, rec, tagged
from sicog.annotate import cot
from sicog.data.checks import InputError
from sicog.data.formats import COT_HEADINGS, STEP_BY_STEP_PHRASE, check_steps, step_body

def run_convert(tmp_path, records, *, as_json=False):
    src = tmp_path / ("in.json" if as_json else "in.jsonl")
    src.write_text(json.dumps(records) if as_json else "".join(json.dumps(r) + "\n" for r in records))
    parser = argparse.ArgumentParser()
    cot.add_arguments(parser)
    rc = cot.run(parser.parse_args(["--input", str(src), "--output-cot-dir", str(tmp_path / "cot"),
                                    "--output-short-dir", str(tmp_path / "short")]))
    read = lambda p: [json.loads(line) for line in p.read_text().splitlines()]
    return rc, read(tmp_path / "cot" / "cot.jsonl"), read(tmp_path / "short" / "short.jsonl"), \
        read(tmp_path / "cot" / "cot_rejects.jsonl")


def test_well_formed_record_single_and_multi_turn(tmp_path):
    multi = {"id": "m", "image": "m.png", "source": {"nested": [1, 2]}, "conversations": [
        {"from": "human", "value": "<image>\nWhat colour are they?"},
        {"from": "gpt", "value": tagged()},
        {"from": "human", "value": "How many? Answer the question using a single word or phrase."},
        {"from": "gpt", "value": tagged({**PARTS, "CONCLUSION": "Three"}, sep="")},
    ]}
    rc, long_out, short_out, rejects = run_convert(tmp_path, [rec("a", tagged()), multi], as_json=True)
    assert rc == 0 and rejects == []
    a, m = long_out
    assert a["id"] == "a" and a["image"] == "a.png"
    assert a["conversations"][0]["value"] == "<image>\nHow many circles? " + STEP_BY_STEP_PHRASE
    answer = a["conversations"][1]["value"]
    assert check_steps(answer, COT_HEADINGS) is None
    assert answer == "\n\n".join(f"Step {k}: {h}\n{PARTS[t]}" for k, (h, t) in
                                 enumerate(zip(COT_HEADINGS, ["SUMMARY", "CAPTION", "REASONING", "CONCLUSION"]), 1))
    assert m["source"] == {"nested": [1, 2]} and len(m["conversations"]) == 4
    assert m["conversations"][0]["value"] == "<image>\nWhat colour are they? " + STEP_BY_STEP_PHRASE
    assert m["conversations"][2]["value"] == "How many? " + STEP_BY_STEP_PHRASE
    assert step_body(m["conversations"][3]["value"], 4) == "Three"
    sa, sm = short_out
    assert sa["conversations"] == [rec("a", "")["conversations"][0], {"from": "gpt", "value": "3"}]
    assert [t["value"] for t in sm["conversations"]] == [
        "<image>\nWhat colour are they?", "3",
        "How many? Answer the question using a single word or phrase.", "Three"]


BAD = [
    (tagged(order=("SUMMARY", "CAPTION", "REASONING")), "turn 1: missing <CONCLUSION>"),
    (tagged({**PARTS, "CAPTION": "   "}), "turn 1: empty <CAPTION>"),
    (tagged() + "<SUMMARY>again</SUMMARY>", "turn 1: duplicated <SUMMARY>"),
    (tagged(order=("CAPTION", "SUMMARY", "REASONING", "CONCLUSION")), "turn 1: tags out of order"),
    (tagged().replace("</REASONING>", ""), "turn 1: malformed <REASONING>: no closing tag"),
    ("<SUMMARY>a<CAPTION>b</SUMMARY>c</CAPTION><REASONING>d</REASONING><CONCLUSION>e</CONCLUSION>",
     "turn 1: malformed tags (nested or crossed)"),
    ("Sure! " + tagged(), "turn 1: text outside the tags"),
    (tagged({**PARTS, "REASONING": "First.\nStep 4: Conclude the task with an answer.\nno"}),
     "turn 1: a tag's text contains `Step k:` markers"),
    ("plain answer", "turn 1: missing <SUMMARY>"),
]


@pytest.mark.parametrize("answer, reason", BAD)
def test_malformed_answers_are_rejected_whole(tmp_path, answer, reason):
    good = rec("good", tagged())
    bad = {"id": "bad", "image": "b.png", "conversations": [  # a bad first turn, a good second one
        {"from": "human", "value": "<image>\nQ1"}, {"from": "gpt", "value": answer},
        {"from": "human", "value": "Q2"}, {"from": "gpt", "value": tagged()}]}
    rc, long_out, short_out, rejects = run_convert(tmp_path, [good, bad])
    assert rc == 0
    assert [r["id"] for r in long_out] == [r["id"] for r in short_out] == ["good"]
    assert len(rejects) == 1 and rejects[0]["id"] == "bad" and rejects[0]["index"] == 1
    assert rejects[0]["reason"].startswith(reason), rejects[0]["reason"]


def test_bad_second_turn_rejects_the_whole_record(tmp_path):
    bad = {"id": "x", "conversations": [
        {"from": "human", "value": "<image>\nQ1"}, {"from": "gpt", "value": tagged()},
        {"from": "human", "value": "Q2"}, {"from": "gpt", "value": "<SUMMARY>s</SUMMARY>"}]}
    rc, long_out, short_out, rejects = run_convert(tmp_path, [bad])
    assert rc == 1 and long_out == [] and short_out == []  # never half-converted
    assert rejects == [{"id": "x", "index": 0, "reason": "turn 2: missing <CAPTION>"}]


def test_structural_problems_and_duplicates(tmp_path):
    records = [
        {"id": "no-conv", "image": "x.png"},
        {"id": "odd", "conversations": [{"from": "human", "value": "Q"}]},
        {"id": "swapped", "conversations": [{"from": "gpt", "value": tagged()}, {"from": "human", "value": "Q"}]},
        rec("dup", tagged()),
        rec("dup", tagged()),
        {"conversations": rec("", tagged())["conversations"]},  # no id: its index becomes the id
    ]
    rc, long_out, short_out, rejects = run_convert(tmp_path, records)
    assert rc == 0
    assert [r["id"] for r in long_out] == [r["id"] for r in short_out] == ["dup", "5"]
    assert {r["id"]: r["reason"] for r in rejects} == {
        "no-conv": "no conversations", "odd": "1 turns: every question needs one answer",
        "swapped": "turn 1: expected a non-empty human question", "dup": "duplicate id (first at record 3)"}


def test_input_file_and_loaded_records_are_not_mutated(tmp_path):
    records = [rec("a", tagged()), rec("b", tagged(order=("CAPTION", "SUMMARY", "REASONING", "CONCLUSION")))]
    src = tmp_path / "in.json"
    src.write_text(json.dumps(records, indent=1))
    before = src.read_bytes()
    loaded = json.loads(before)
    snapshot = copy.deepcopy(loaded)
    long_out, short_out, rejects = cot.convert_records(loaded)
    assert loaded == snapshot
    long_out[0]["conversations"][0]["value"] = "changed"  # outputs share nothing with the input
    short_out[0]["image"] = "changed"
    assert loaded == snapshot
    parser = argparse.ArgumentParser()
    cot.add_arguments(parser)
    cot.run(parser.parse_args(["--input", str(src), "--output-cot-dir", str(tmp_path / "o"),
                               "--output-short-dir", str(tmp_path / "o")]))
    assert src.read_bytes() == before
    assert len(rejects) == 1


def test_unreadable_input_is_a_clear_error(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1}\n{oops\n')
    parser = argparse.ArgumentParser()
    cot.add_arguments(parser)
    args = parser.parse_args(["--input", str(src), "--output-cot-dir", str(tmp_path), "--output-short-dir", str(tmp_path)])
    with pytest.raises(InputError, match="in.jsonl:2: invalid JSON"):
        cot.run(args)
