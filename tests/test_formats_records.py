"""The exact text formats of SPEC section 2 and the record I/O every stage builds on."""
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sicog.data import formats as F
from sicog.data.records import JsonlAppender, read_records, record_id, write_jsonl


def _cod(bodies=("one", "two", "three", "four", "The full description.")):
    return F.format_steps(F.COD_HEADINGS, list(bodies))


def test_format_layout_is_exact():
    text = F.format_steps(F.COT_HEADINGS, ["a", "b", "c", "d"])
    assert text == ("Step 1: Clarify the task objective.\na\n\n"
                    "Step 2: Extract the crucial visual information from the image.\nb\n\n"
                    "Step 3: Generate detailed reasoning to solve the task.\nc\n\n"
                    "Step 4: Conclude the task with an answer.\nd")
    with pytest.raises(ValueError):
        F.format_steps(F.COT_HEADINGS, ["only one"])


@pytest.mark.parametrize("marker", ["Step 5:", "**Step 5**:", "**Step 5:**", "### Step 5:", "step 5 -"])
def test_markdown_variants_parse(marker):
    text = _cod().replace("Step 5:", marker)
    assert F.step_body(text, 5) == "The full description."
    assert F.final_part(text, "cod") == "The full description."
    assert F.check_steps(text, F.COD_HEADINGS) is None
    assert F.normalise_steps(text, F.COD_HEADINGS) == _cod()


def test_check_steps_reasons():
    assert F.check_steps("no steps here", F.COD_HEADINGS) == "no step markers"
    missing = _cod().split("\n\nStep 5:")[0]
    assert "expected steps 1..5" in F.check_steps(missing, F.COD_HEADINGS)
    wrong = _cod().replace(F.COD_HEADINGS[2], "Something else.")
    assert "step 3 heading mismatch" in F.check_steps(wrong, F.COD_HEADINGS)
    empty = _cod(("one", "two", "", "four", "five"))
    assert F.check_steps(empty, F.COD_HEADINGS) == "step 3 has an empty body"
    with pytest.raises(ValueError):
        F.normalise_steps(empty, F.COD_HEADINGS)


def test_final_part_falls_back_to_whole_text():
    assert F.final_part("  A plain caption.  ", "cod") == "A plain caption."
    assert F.final_part(_cod(), "plain") == _cod()
    assert F.cod_to_dd(_cod()) == "The full description."
    assert F.cod_to_dd("no steps") is None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"),
                        min_size=1, max_size=40).map(str.strip).filter(lambda s: s and "step" not in s.lower()),
                min_size=4, max_size=4))
def test_format_parse_round_trip(bodies):
    text = F.format_steps(F.COT_HEADINGS, bodies)
    steps = F.parse_steps(text)
    assert [steps[k][1] for k in range(1, 5)] == bodies
    assert [steps[k][0] for k in range(1, 5)] == list(F.COT_HEADINGS)


def test_question_rewrite():
    q = "What colour is the star? Answer the question using a single word or phrase."
    assert F.to_step_by_step_question(q) == "What colour is the star? Answer the question step-by-step."
    assert F.to_step_by_step_question("How many?") == "How many? Answer the question step-by-step."
    once = F.to_step_by_step_question("How many?")
    assert F.to_step_by_step_question(once) == once


def test_generation_prompts():
    rec = {"id": 1, "conversations": [{"from": "human", "value": "<image>\nHow many stars? Answer the question step-by-step."}]}
    assert F.generation_prompt({}, "caption", "cod-default") == (
        "<image>\nPlease generate a detailed caption of this image. Describe the image step-by-step.")
    assert F.generation_prompt({}, "caption", "default").endswith("Be as descriptive as possible.")
    assert F.generation_prompt(rec, "reasoning", "cot-default") == rec["conversations"][0]["value"]
    # only the phrase is removed, the space before it stays (as in the authors' recap_558k_reasoning.py;
    # tests/fixtures/authors/prompts.json, generation.reasoning.default)
    assert F.generation_prompt(rec, "reasoning", "default") == "<image>\nHow many stars? "
    conv = {"conversations": [{"from": "human", "value": "<image>\nWhat is shown?"}]}
    assert F.generation_prompt(conv, "caption", "cod-conv") == "<image>\nWhat is shown? Describe the image step-by-step."
    for bad in [({}, "reasoning", "cot-default"), ({}, "caption", "nope"), ({}, "other", "default")]:
        with pytest.raises(ValueError):
            F.generation_prompt(*bad)


def test_read_records_json_and_jsonl(tmp_path):
    recs = [{"id": "a", "x": 1}, {"id": "b", "x": 2}]
    (tmp_path / "l.json").write_text(json.dumps(recs))
    write_jsonl(tmp_path / "l.jsonl", recs)
    assert read_records(tmp_path / "l.json") == recs == read_records(tmp_path / "l.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_records(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError):
        read_records(tmp_path / "missing.jsonl")
    assert record_id({"x": 1}, 7) == "7" and record_id({"id": 3}) == "3"


def test_atomic_files_get_plain_permissions(tmp_path):
    write_jsonl(tmp_path / "out.jsonl", [{"id": 1}])
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "out.jsonl").st_mode & 0o777 == 0o666 & ~umask


def test_appender_recovers_from_a_torn_line(tmp_path):
    path = tmp_path / "progress.jsonl"
    with JsonlAppender(path) as out:
        out.write({"id": "a"})
        out.write({"id": "b"})
    with path.open("a") as f:
        f.write('{"id": "c", "tex')          # a writer killed half-way through a line
    again = JsonlAppender(path)
    assert again.done_ids == {"a", "b"}
    again.write({"id": "c"})
    again.close()
    assert [r["id"] for r in read_records(path)] == ["a", "b", "c"]
