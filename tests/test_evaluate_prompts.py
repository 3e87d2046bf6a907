"""Pinned eval settings and the prompts built from them."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from sicog.data.formats import CAPTION_PROMPTS, SHORT_ANSWER_PHRASE
from sicog.evaluate.prompts import eval_prompt, option_map, question_type
from sicog.evaluate.settings import EVAL_CONFIGS_DIR, load_eval_config

MC = "Answer with the option's letter from the given choices directly."


def test_v1_is_pinned():
    cfg = load_eval_config("v1")
    assert cfg.version == "v1"
    assert cfg.generation_kwargs("qa") == {"max_new_tokens": cfg.max_new_tokens["qa"], "do_sample": False,
                                           "num_beams": 1}
    assert cfg.suffix["multiple_choice"] == MC
    assert cfg.suffix["short_answer"] == SHORT_ANSWER_PHRASE
    assert cfg.caption_prompt in CAPTION_PROMPTS


def test_bad_configs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown eval config"):
        load_eval_config("v999")
    raw = yaml.safe_load((EVAL_CONFIGS_DIR / "v1.yaml").read_text())
    del raw["batch_size"]
    raw["temperature"] = 0.7
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=r"missing keys \['batch_size'\], unknown keys \['temperature'\]"):
        load_eval_config(str(p))
    raw = yaml.safe_load((EVAL_CONFIGS_DIR / "v1.yaml").read_text())
    raw["caption_prompt"] = "cot-default"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="caption_prompt"):
        load_eval_config(str(p))


def test_multiple_choice_prompt():
    cfg = load_eval_config("v1")
    rec = {"question": "<image>\nHow many circles are there in the image?", "options": ["1", "2", "3", "4"]}
    assert question_type(rec, "qa") == "multiple_choice"
    expected = "<image>\nHow many circles are there in the image?\nA. 1\nB. 2\nC. 3\nD. 4\n" + MC
    assert eval_prompt(rec, "qa", cfg) == expected
    # A question that already lists its options and instruction is not extended twice.
    posed = {"question": expected, "options": ["1", "2", "3", "4"]}
    assert eval_prompt(posed, "qa", cfg) == expected


def test_short_yes_no_and_caption_prompts():
    cfg = load_eval_config("v1")
    rec = {"question": "<image>\nWhat colour is the star?"}
    assert question_type(rec, "qa") == "short_answer"
    assert eval_prompt(rec, "qa", cfg) == f"<image>\nWhat colour is the star? {SHORT_ANSWER_PHRASE}"
    posed = {"question": f"<image>\nWhat colour is the star? {SHORT_ANSWER_PHRASE}"}
    assert eval_prompt(posed, "qa", cfg) == eval_prompt(rec, "qa", cfg)
    pope = {"question": "Is there a red circle in the image?", "answer": "yes"}
    assert eval_prompt(pope, "pope", cfg) == f"<image>\nIs there a red circle in the image? {cfg.suffix['yes_no']}"
    assert eval_prompt({}, "captions", cfg) == "<image>\n" + CAPTION_PROMPTS[cfg.caption_prompt]
    cod = dataclasses.replace(cfg, caption_prompt="cod-default")
    assert eval_prompt({}, "captions", cod).endswith("Describe the image step-by-step.")
    with pytest.raises(ValueError, match="no question"):
        eval_prompt({"question": "<image>\n"}, "qa", cfg)


def test_option_map():
    assert option_map(["a", "b"]) == {"A": "a", "B": "b"}
    assert option_map({"a": "x", "B": "y"}) == {"A": "x", "B": "y"}
    with pytest.raises(ValueError, match="single letters"):
        option_map({"AA": "x"})
    with pytest.raises(ValueError, match="list or a dict"):
        option_map("A. x")


def test_v1_prompts_pose_the_world_questions_exactly(tmp_path):
    """The pinned prompts rebuild each benchmark question exactly as the world poses (and trains) it."""
    from sicog.data.records import read_records
    from sicog.world.build import build_world

    build_world(tmp_path / "world", "micro", seed=0)
    cfg = load_eval_config("v1")
    for bench in ("qa", "pope", "captions"):
        records = read_records(tmp_path / "world" / "data" / "eval" / f"{bench}.jsonl")
        assert records and all(eval_prompt(r, bench, cfg) == r["question"] for r in records)
    qa = read_records(tmp_path / "world" / "data" / "eval" / "qa.jsonl")
    assert {question_type(r, "qa") for r in qa} == {"multiple_choice", "short_answer"}
