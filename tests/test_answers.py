"""One answer normaliser: voting (curation), scoring (benchmarks) and judging agree on every form."""
from __future__ import annotations

from sicog.curate.scoring import vote_scores
from sicog.data.answers import final_answer, normalise_answer
from sicog.data.formats import COT_HEADINGS, format_steps
from sicog.evaluate.judge import judge_answer
from sicog.evaluate.scorers import qa_correct

SAME = ["I think the answer is 3", "three", "3", "The answer is Three."]


def test_forms_of_one_answer_share_a_key():
    assert {normalise_answer(a) for a in SAME} == {"3"}


def test_forms_of_one_answer_vote_together():
    assert vote_scores(SAME + ["4"]) == [0.8, 0.8, 0.8, 0.8, 0.2]


def test_forms_of_one_answer_score_and_judge_alike():
    record = {"answer": "3"}
    assert all(qa_correct(a, record) for a in SAME)
    assert all(judge_answer(a, record) for a in SAME)
    assert not qa_correct("four", record) and not judge_answer("The answer is 4.", record)


def test_step_by_step_answer_is_keyed_on_its_conclusion():
    text = format_steps(COT_HEADINGS, ["Look.", "Two red circles, one blue.", "Count.",
                                       "There are three objects, so the answer is three."])
    assert final_answer(text) == "three."
    assert normalise_answer(text) == "3"


def test_number_words_beyond_twenty_and_lead_ins():
    assert normalise_answer("Thirty") == "30" == normalise_answer("Answer: thirty.")
    assert normalise_answer("So, the final answer is: a Red Cube!") == "red cube"
    assert normalise_answer("") == ""
    assert normalise_answer("red") != normalise_answer("blue")
