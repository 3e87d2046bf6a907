"""Scorers and the judge on hand-made right and wrong answers, captions and POPE replies."""
from __future__ import annotations

import pytest

from sicog.data.formats import COD_HEADINGS, COT_HEADINGS, format_steps
from sicog.data.records import write_jsonl
from sicog.evaluate.judge import judge_answer, judge_caption
from sicog.evaluate.scorers import (
    extract_choice, normalise_answer, score_benchmark, score_captions, score_pope, score_qa, yes_no,
)
from sicog.world.parse import parse_caption


def obj(colour, shape, size="medium", label=None):
    return {"colour": colour, "shape": shape, "size": size, "label": label,
            "bbox": [0, 0, 10, 10], "center": [5, 5], "position": "center"}


SCENE = {"width": 112, "height": 112, "background": "gray",
         "objects": [obj("red", "circle", "large", "K"), obj("blue", "square", "small"), obj("green", "triangle")]}


def cot(answer: str) -> str:
    return format_steps(COT_HEADINGS, ["Find it.", "Shapes.", "Reasoning.", answer])


def test_normalise_answer():
    assert normalise_answer("The Three!") == "3"
    assert normalise_answer("  a Red-circle. ") == "red circle"
    assert normalise_answer("top left") == normalise_answer("Top Left.")
    assert normalise_answer("two") != normalise_answer("three")


@pytest.mark.parametrize("text,letter", [
    ("B", "B"), ("(B)", "B"), ("B. red", "B"), ("The answer is B", "B"), ("The answer is (C).", "C"),
    ("red", "B"), ("option D", "D"), (cot("C"), "C"), ("A red circle", None), ("purple", None), ("", None),
])
def test_extract_choice(text, letter):
    assert extract_choice(text, ["green", "red", "blue", "yellow"]) == letter


@pytest.mark.parametrize("text,answer", [
    ("Yes", "yes"), ("Yes, there is a red circle.", "yes"), ("no.", "no"), ("No, there is not.", "no"),
    ("There is no red circle.", "no"), ("I think so, yes", "yes"), ("maybe", None), (cot("yes"), "yes"),
])
def test_yes_no(text, answer):
    assert yes_no(text) == answer


def test_qa_accuracy_per_skill_and_type_with_cot_answers():
    records = [
        {"id": "1", "answer": "3", "skill": "count", "type": "short"},
        {"id": "2", "answer": "B", "options": ["green", "red", "blue", "pink"], "skill": "colour", "type": "mc"},
        {"id": "3", "answer": "top left", "skill": "position", "type": "short"},
        {"id": "4", "answer": "yes", "skill": "relation", "type": "short"},
        {"id": "5", "answer": "K", "skill": "text", "type": "short"},
    ]
    preds = [
        {"id": "1", "prediction": cot("three")},       # right, CoT scored on its conclusion
        {"id": "2", "prediction": "(B) red"},          # right
        {"id": "3", "prediction": "bottom left"},      # wrong
        {"id": "4", "prediction": "Yes, it is."},      # right
    ]                                                  # 5 missing: wrong
    s = score_qa(records, preds)
    assert s["accuracy"] == pytest.approx(3 / 5) and s["missing"] == 1 and s["n"] == 5
    assert s["per_skill"]["count"]["accuracy"] == 1.0 and s["per_skill"]["position"]["accuracy"] == 0.0
    assert s["per_type"]["mc"] == {"accuracy": 1.0, "n": 1}
    assert s["headline"] == {"accuracy": s["accuracy"]}
    # a CoT answer whose conclusion is wrong is wrong even if the reasoning names the answer
    assert not judge_answer(format_steps(COT_HEADINGS, ["a", "b", "There are 3.", "4"]), records[0])
    assert judge_answer("The answer is 3.", records[0])


def test_pope_metrics_overall_and_per_variant():
    records = [{"id": f"{v}{i}", "answer": a, "variant": v}
               for v in ("random", "adversarial") for i, a in enumerate(["yes", "yes", "no", "no"])]
    replies = {"random": ["Yes, there is.", "yes", "no", "No."],       # all right
               "adversarial": ["yes", "no", "yes", "uh"]}             # tp=1, fn=1, fp=1, invalid->no: tn=1
    preds = [{"id": f"{v}{i}", "prediction": r} for v, rs in replies.items() for i, r in enumerate(rs)]
    s = score_pope(records, preds)
    adv = s["per_variant"]["adversarial"]
    assert s["per_variant"]["random"]["accuracy"] == 1.0 and s["per_variant"]["random"]["f1"] == 1.0
    assert adv["accuracy"] == 0.5 and adv["precision"] == 0.5 and adv["recall"] == 0.5 and adv["f1"] == 0.5
    assert adv["yes_ratio"] == 0.5 and adv["invalid"] == 1
    assert s["accuracy"] == 0.75 and s["precision"] == pytest.approx(3 / 4) and s["recall"] == pytest.approx(3 / 4)
    assert s["yes_ratio"] == 0.5 and s["n"] == 8


def test_caption_parser_reads_objects_sizes_labels_and_counts():
    p = parse_caption("Three objects: a large red circle marked with the letter K, two blue squares "
                      "and a medium-sized green triangle.")
    assert p["count"] == 3
    assert p["objects"] == {"red circle": {"size": "large", "label": "K"},
                            "blue square": {"size": None, "label": None},
                            "green triangle": {"size": "medium", "label": None}}


def test_judge_caption_right_partial_hallucinated_and_wrong_attribute():
    right = ("This image shows three objects. There is a large red circle marked with the letter K, "
             "a small blue square and a green triangle.")
    j = judge_caption(format_steps(COD_HEADINGS, ["a", "b", "c", "d", right]), SCENE)  # CoD: judged on step 5
    assert j["correct"] and j["recall"] == 1.0 and j["precision"] == 1.0 and j["hallucination_rate"] == 0.0
    partial = judge_caption("A red circle and a purple cross.", SCENE)
    assert not partial["correct"] and partial["recall"] == pytest.approx(1 / 3)
    assert partial["precision"] == 0.5 and partial["hallucination_rate"] == 0.5
    assert partial["hallucinated"] == ["purple cross"] and set(partial["missed"]) == {"blue square", "green triangle"}
    wrong_label = judge_caption("A red circle with the letter B, a blue square and a green triangle.", SCENE)
    assert not wrong_label["correct"] and wrong_label["recall"] == 1.0 and wrong_label["attribute_errors"]
    wrong_count = judge_caption("Four objects: a red circle, a blue square and a green triangle.", SCENE)
    assert wrong_count["count_ok"] is False and not wrong_count["correct"]
    nothing = judge_caption("A picture.", SCENE)
    assert nothing["recall"] == 0.0 and nothing["precision"] == 1.0 and nothing["hallucination_rate"] == 0.0


def test_caption_scores_and_the_benchmark_entry(tmp_path):
    records = [{"id": "a", "scene": SCENE, "scene_id": "s1"}, {"id": "b", "scene": SCENE, "scene_id": "s1"}]
    preds = [{"id": "a", "prediction": "A large red circle with the letter K, a blue square and a green triangle."},
             {"id": "b", "prediction": "A red circle and a yellow cross."}]
    s = score_captions(records, preds)
    assert s["accuracy"] == 0.5 and s["recall"] == pytest.approx((1 + 1 / 3) / 2)
    assert s["chair_i"] == pytest.approx(1 / 5) and s["chair_s"] == 0.5
    # what the evaluation runs: caption records without their scene take it from the world's world.jsonl
    write_jsonl(tmp_path / "world.jsonl", [{"id": "s1", **SCENE}])
    bare = [{"id": r["id"], "scene_id": "s1"} for r in records]
    assert score_benchmark(tmp_path, "eval", "captions", bare, preds) == s
    with pytest.raises(ValueError, match="unknown benchmark 'bleu'"):
        score_benchmark(tmp_path, "eval", "bleu", records, preds)


def test_a_benchmark_record_without_answer_is_a_clear_error():
    with pytest.raises(ValueError, match="record q7 has no answer"):
        score_qa([{"id": "q7", "skill": "count"}], [{"id": "q7", "prediction": "3"}])
    with pytest.raises(ValueError, match="record p1 has no answer"):
        score_pope([{"id": "p1", "variant": "random"}], [])
