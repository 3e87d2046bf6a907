"""Generation prompts and CoT conversion against the authors' scripts (fixtures/authors)."""
import copy

import pytest
from authors_fixtures import load_json, load_jsonl

from sicog.annotate.cot import convert_record
from sicog.data.formats import COT_HEADINGS, generation_prompt
from sicog.data.template import render

PROMPTS = load_json("prompts.json")["generation"]
OURS = {"caption": ("cod-default", "default", "cod-conv"), "reasoning": ("cot-default", "default")}
EXAMPLES = [(task, name, ex) for task, names in OURS.items() for name in names
            for ex in PROMPTS[task][name]["examples"]]
COT = load_jsonl("cot/cases.jsonl")


@pytest.mark.parametrize("task, name, ex", EXAMPLES,
                         ids=[f"{t}/{n}/{i % 5}" for i, (t, n, _) in enumerate(EXAMPLES)])
def test_generation_prompts_equal_the_authors(task, name, ex):
    record = {"conversations": [{"from": "human", "value": ex["record_question"]}]}
    user = generation_prompt(record, task, name)
    assert user == ex["user_turn"]
    assert render([{"from": "human", "value": user}], add_generation_prompt=True).text == ex["prompt"]


def test_reasoning_default_keeps_option_lines():
    record = {"conversations": [{"from": "human", "value":
                                 "<image>\nWhich?\nA. x\nB. y\nAnswer the question step-by-step."}]}
    assert generation_prompt(record, "reasoning", "default") == "<image>\nWhich?\nA. x\nB. y\n"


def test_cot_headings_are_the_authors():
    assert [f"Step {k}: {h}" for k, h in enumerate(COT_HEADINGS, 1)] == load_json("prompts.json")["cot_converter"]["step_headings"]


@pytest.mark.parametrize("case", [c for c in COT if c["class"].startswith("well-formed")],
                         ids=lambda c: c["name"])
def test_cot_conversion_equals_the_authors_on_well_formed_records(case):
    long_rec, short_rec = convert_record(copy.deepcopy(case["input"]))
    assert long_rec == case["cot"]
    assert short_rec == case["short"]
