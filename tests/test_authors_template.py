"""Training ids/labels and generation prompts against the authors' preprocess_qwen (fixtures/authors/template)."""
import pytest
from authors_fixtures import AUTHORS, load_json, load_jsonl
from transformers import AutoTokenizer

from sicog.data.template import IGNORE_INDEX, SYSTEM_PROMPT, encode_chat, prepare_turns, render

CASES = load_jsonl("template/cases.jsonl")
TRAIN = [c for c in CASES if c["kind"] == "train"]
GENERATION = [c for c in CASES if c["kind"] == "generation"]
META = load_json("template/meta.json")["tokenizer"]
IMAGE_IN_FIXTURE = -200


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(str(AUTHORS / "template" / "tokenizer"))


def test_fixture_tokenizer_ids(tok):
    assert tok.convert_tokens_to_ids("<image>") == META["image_token_id"]
    assert tok.encode("\n", add_special_tokens=False) == [META["newline_id"]]


def _theirs(ids, image_id):
    return [image_id if i == IMAGE_IN_FIXTURE else i for i in ids]


@pytest.mark.parametrize("case", TRAIN, ids=[c["name"] for c in TRAIN])
def test_train_ids_and_labels_equal_the_authors(tok, case):
    system = case["system"] if case["system"] is not None else SYSTEM_PROMPT
    ids, labels = encode_chat(tok, case["record"]["conversations"], "authors", system=system)
    assert ids == _theirs(case["input_ids"], META["image_token_id"])
    assert labels == case["labels"]


@pytest.mark.parametrize("case", GENERATION, ids=[c["name"] for c in GENERATION])
def test_generation_prompt_equals_the_authors(tok, case):
    turn = [{"from": "human", "value": case["question"]}]
    assert render(turn, add_generation_prompt=True).text == case["prompt_text"]
    ids, labels = encode_chat(tok, turn, add_generation_prompt=True)
    assert ids == _theirs(case["input_ids"], META["image_token_id"])
    assert set(labels) == {IGNORE_INDEX}


def test_prepare_turns_moves_the_image_and_drops_a_leading_answer():
    turns = [{"from": "gpt", "value": "hello"}, {"from": "human", "value": "What is this? <image> "},
             {"from": "gpt", "value": "A cat."}]
    assert prepare_turns(turns) == [{"from": "human", "value": "<image>\nWhat is this?"},
                                    {"from": "gpt", "value": "A cat."}]
    # already at the start: unchanged, even without the newline
    assert prepare_turns([{"from": "human", "value": "<image>Q"}])[0]["value"] == "<image>Q"
    with pytest.raises(ValueError, match="only an assistant turn"):
        prepare_turns([{"from": "gpt", "value": "x"}])
