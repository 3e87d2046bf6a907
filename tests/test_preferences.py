"""Preference data: `validate_pair`, pairs from curation and from corrupted-image candidates."""
from __future__ import annotations

import json

import pytest

from cli_helpers import sicog
from sicog.cli import main as sicog_main
from sicog.curate.preferences import pairs_from_noisy, validate_pair
from sicog.data.formats import COT_HEADINGS, format_steps

QUESTION = "<image>\nWhat colour is the cube? Answer the question step-by-step."


def cot(answer: str, seen: str = "A cube.") -> str:
    return format_steps(COT_HEADINGS, ["Find the cube colour.", seen, "I look at the cube.", answer])


def loose_cot(answer: str) -> str:
    # The markdown variant a model may produce; it must come out in the exact layout.
    return "\n\n".join(f"**Step {k}:** {h}\n{b}" for k, (h, b) in enumerate(
        zip(COT_HEADINGS, ["Find the cube colour.", "A cube.", "I look at the cube.", answer]), 1))


def write_lines(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def read_jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def good_pair(**changes):
    pair = {"id": "a", "image": "a.png", "prompt": QUESTION, "chosen": cot("Red."), "rejected": cot("Blue.")}
    pair.update(changes)
    return pair


@pytest.mark.parametrize("changes, fragment", [
    ({"id": None}, "missing 'id'"),
    ({"id": "  "}, "missing 'id'"),
    ({"chosen": ""}, "'chosen'"),
    ({"rejected": None}, "'rejected'"),
    ({"prompt": 3}, "'prompt'"),
    ({"rejected": cot("Red.") + "  "}, "same text"),
    ({"image": ""}, "'image'"),
    ({"prompt": "What colour?"}, "0 <image> tokens"),
    ({"prompt": "<image>\n<image>\nWhat colour?"}, "2 <image> tokens"),
])
def test_validate_pair_reasons(changes, fragment):
    assert validate_pair(good_pair()) is None
    reason = validate_pair(good_pair(**changes))
    assert reason is not None and fragment in reason


def test_validate_pair_text_only_and_non_objects():
    text_only = {k: v for k, v in good_pair(prompt="What colour?").items() if k != "image"}
    assert validate_pair(text_only) is None
    assert "no image" in validate_pair({**text_only, "prompt": QUESTION})
    assert validate_pair([1, 2]) == "not a JSON object"


def curated_line(rid, answer, image=True):
    rec = {"id": rid, "conversations": [{"from": "human", "value": QUESTION}, {"from": "gpt", "value": answer}]}
    if image:
        rec["image"] = f"img/{rid}.png"
    return rec


def noisy_line(rid, candidates, augment="gaussian_blur", prompt=QUESTION):
    return {"id": rid, "image": f"img/{rid}.png", "prompt": prompt, "candidates": candidates,
            "generation": {"task": "reasoning", "prompt_name": "cot-default", "model": "m", "temperature": 0.7,
                           "top_p": 0.9, "num_beams": 1, "max_new_tokens": 64, "seed": 0, "augment": augment}}


@pytest.fixture
def noisy_setup(tmp_path):
    curated = tmp_path / "curated.jsonl"
    noisy = tmp_path / "noisy.jsonl"
    write_lines(curated, [
        curated_line("a", cot("Red.")),
        curated_line("b", cot("Green.")),
        curated_line("c", cot("Blue.")),          # no corrupted candidates for it
        curated_line("d", ""),                     # empty chosen side
        curated_line("e", cot("Red.")),
        curated_line("f", cot("Red.")),
        "{broken",
    ])
    write_lines(noisy, [
        noisy_line("a", [loose_cot("Orange."), cot("Purple."), "", cot("Red.")]),
        noisy_line("b", [cot("Green.")]),          # the only candidate equals the chosen answer
        noisy_line("d", [cot("Pink.")]),
        noisy_line("e", [cot("Pink.")], augment=None),
        noisy_line("f", [cot("Pink.")], prompt="<image>\nAnother question?"),
        noisy_line("g", [cot("Pink.")]),           # not in the curated set
        noisy_line("h", ["", " "]),                # empty rejected side
    ])
    return curated, noisy


def test_noisy_pairs_and_their_rejects(noisy_setup):
    curated, noisy = noisy_setup
    pairs, rejects = pairs_from_noisy(noisy, curated, seed=0)
    assert [p["id"] for p in pairs] == ["a"]
    pair = pairs[0]
    assert pair["chosen"] == cot("Red.") and pair["image"] == "img/a.png" and pair["prompt"] == QUESTION
    # The rejected side is a corrupted-image candidate in the exact step layout, never the chosen text.
    assert pair["rejected"] in (cot("Orange."), cot("Purple."))
    reasons = {r["id"]: r["reason"] for r in rejects}
    assert len(reasons) == len(rejects)  # one reject per id (the malformed line has id None)
    assert "equals the chosen answer" in reasons["b"]
    assert "no corrupted-image candidates" in reasons["c"]
    assert "empty chosen side" in reasons["d"]
    assert "augment is not set" in reasons["e"]
    assert "prompt differs" in reasons["f"]
    assert "not in the curated set" in reasons["g"]
    assert "no non-empty candidate" in reasons["h"]
    assert any(r["reason"].startswith("malformed JSON") for r in rejects)
    # Seeded: the same seed always picks the same candidate, and the seeds do not all agree.
    picks = {pairs_from_noisy(noisy, curated, seed=s)[0][0]["rejected"] for s in range(12)}
    assert pairs_from_noisy(noisy, curated, seed=5)[0] == pairs_from_noisy(noisy, curated, seed=5)[0]
    assert picks == {cot("Orange."), cot("Purple.")}


def test_build_preferences_cli_both_sources(tmp_path, noisy_setup):
    curated, noisy = noisy_setup
    curation_pairs = tmp_path / "preferences.jsonl"
    write_lines(curation_pairs, [
        good_pair(id="x"),
        good_pair(id="y", rejected=cot("Red.")),   # same text
        good_pair(id="x"),                         # duplicate
        "not json",
        {k: v for k, v in good_pair(id="z").items() if k != "prompt"},
    ])
    out = tmp_path / "dpo" / "pairs.jsonl"
    rc = sicog_main(["build-preferences", "--source", "both", "--pairs", str(curation_pairs), "--noisy", str(noisy),
                     "--curated", str(curated), "--out", str(out), "--seed", "1"])
    assert rc == 0
    pairs = read_jsonl(out)
    assert [p["id"] for p in pairs] == ["x", "a"]
    assert all(validate_pair(p) is None for p in pairs)
    rejects = read_jsonl(tmp_path / "dpo" / "pairs.rejects.jsonl")
    by_source = {}
    for r in rejects:
        by_source.setdefault(r["source"], []).append(r)
    assert len(by_source["curation"]) == 4 and len(by_source["noisy"]) == 8
    assert {r["reason"] for r in by_source["curation"] if r["id"] == "y"} == {"chosen and rejected are the same text"}

    only = tmp_path / "only.jsonl"
    assert sicog_main(["build-preferences", "--source", "curation", "--pairs", str(curation_pairs),
                       "--out", str(only)]) == 0
    assert [p["id"] for p in read_jsonl(only)] == ["x"]
    rc, err = sicog("build-preferences", "--source", "noisy", "--out", str(only))
    assert rc == 2 and "--source noisy needs --noisy and --curated" in err, err
    empty = tmp_path / "empty.jsonl"
    write_lines(empty, ["nope"])
    assert sicog_main(["build-preferences", "--source", "curation", "--pairs", str(empty), "--out", str(only)]) == 1


def test_missing_or_unparsable_files_give_clear_errors(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": 1}, ')
    # build-preferences' and curate's bad inputs are one-line errors that exit 2 (sicog.data.checks.InputError)
    rc, err = sicog("build-preferences", "--source", "curation", "--pairs", str(broken), "--out",
                    str(tmp_path / "o.jsonl"))
    assert rc == 2 and "--pairs" in err and "broken.json" in err and "Traceback" not in err, err
    rc, err = sicog("build-preferences", "--source", "curation", "--pairs", str(tmp_path / "nope.jsonl"),
                    "--out", str(tmp_path / "o.jsonl"))
    assert rc == 2 and f"--pairs {tmp_path / 'nope.jsonl'}: no such file" in err, err
    rc, err = sicog("build-preferences", "--source", "noisy", "--noisy", str(broken), "--curated", str(broken),
                    "--out", str(tmp_path / "o.jsonl"))
    assert rc == 2 and "--curated" in err and "broken.json" in err and "Traceback" not in err, err
    rc, err = sicog("curate", "--candidates", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "c"))
    assert rc == 2 and f"--candidates {tmp_path / 'nope.jsonl'}: no such file" in err, err
    rc, err = sicog("curate", "--candidates", str(broken), "--out", str(tmp_path / "c"), "--method", "vote")
    assert rc == 2 and "--candidates" in err and "broken.json" in err and "Traceback" not in err, err
