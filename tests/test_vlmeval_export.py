"""`sicog world export-vlmeval`: TSVs that pandas parses, images that round-trip, rejects recorded."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sicog.data.formats import SHORT_ANSWER_PHRASE
from sicog.data.records import write_jsonl
from sicog.evaluate.vlmeval_export import export_vlmeval, resolve_images

MC = "Answer with the option's letter from the given choices directly."


def _image(path, colour, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, colour)
    im.putpixel((3, 4), (1, 2, 3))  # a detail that a lossy round trip would lose
    im.save(path)
    return np.asarray(im)


@pytest.fixture()
def world(tmp_path):
    w = tmp_path / "world"
    pixels = {f"images/{i}.png": _image(w / f"images/{i}.png", (40 * i, 200 - 30 * i, 90)) for i in range(3)}
    (w / "images" / "broken.png").write_bytes(b"not a png")
    qa = [
        {"id": "q0", "image": "images/0.png", "options": ["1", "2", "3", "4"],
         "question": "<image>\nHow many circles?\nA. 1\nB. 2\nC. 3\nD. 4\n" + MC,
         "answer": "B", "skill": "count", "type": "multiple_choice"},
        {"id": "q1", "image": "images/1.png", "question": "<image>\nWhat colour is the square?",
         "options": {"A": "red", "B": "blue", "C": "grey", "D": "green"}, "answer": "green", "skill": "colour"},
        {"id": "q2", "image": "images/0.png", "question": "<image>\nWhat shape is left?\nSecond line.",
         "options": ["circle", "square", "triangle", "star"], "answer": "A", "skill": "shape"},
        {"id": "q3", "image": "images/2.png", "question": "<image>\nWhat letter is printed?", "answer": "K",
         "skill": "text"},
        {"id": "q4", "image": "images/broken.png", "question": "<image>\nHow many?", "options": ["1", "2"],
         "answer": "A", "skill": "count"},
        {"id": "q5", "image": "images/1.png", "question": "<image>\nWhich?", "options": ["x", "y"],
         "answer": "z", "skill": "count"},
        {"id": "q6", "image": "images/1.png", "question": "<image>\nWhich?", "options": ["x", "None"],
         "answer": "A", "skill": "count"},
    ]
    pope = [
        {"id": f"p{i}", "image": f"images/{i % 3}.png", "question": f"<image>\nIs there a red circle in the image? {SHORT_ANSWER_PHRASE}",
         "answer": "yes" if i % 2 else "no", "variant": ("random", "popular", "adversarial")[i % 3]}
        for i in range(6)
    ] + [{"id": "p6", "image": "images/missing.png", "question": "<image>\nIs there a cat?", "answer": "no",
          "variant": "random"}]
    write_jsonl(w / "data/eval/qa.jsonl", qa)
    write_jsonl(w / "data/eval/pope.jsonl", pope)
    return w, pixels


def test_export_tsvs_parse_and_images_round_trip(world, tmp_path):
    w, pixels = world
    out = tmp_path / "lmu"
    manifest = export_vlmeval(w, out)
    assert set(manifest["datasets"]) == {"SICOG_EVAL_QA", "SICOG_EVAL_POPE"}

    qa = pd.read_csv(out / "SICOG_EVAL_QA.tsv", sep="\t")
    assert list(qa["id"]) == ["q0", "q1", "q2"]
    assert list(qa["answer"]) == ["B", "D", "A"]          # the option text "green" became its letter
    assert list(qa["category"]) == ["count", "colour", "shape"]
    assert qa.loc[1, "C"] == "grey"
    assert qa.loc[0, "question"] == "How many circles?"   # stored bare: options in A-D, no instruction
    assert qa.loc[2, "question"] == "What shape is left?\nSecond line."
    assert str(qa.loc[2, "image"]) == str(qa.loc[0, "index"])   # same image stored once
    for img, src in zip(resolve_images(qa), ["images/0.png", "images/1.png", "images/0.png"]):
        assert np.array_equal(np.asarray(img), pixels[src])

    pope = pd.read_csv(out / "SICOG_EVAL_POPE.tsv", sep="\t")
    assert list(pope["answer"]) == ["No", "Yes", "No", "Yes", "No", "Yes"]
    assert set(pope["category"]) == {"random", "popular", "adversarial"}
    assert set(pope["question"]) == {"Is there a red circle in the image?"}
    assert not {"A", "B"} & set(pope.columns)
    for img, i in zip(resolve_images(pope), range(6)):
        assert np.array_equal(np.asarray(img), pixels[f"images/{i % 3}.png"])

    assert manifest["datasets"]["SICOG_EVAL_QA"] == {
        "benchmark": "qa", "type": "multiple_choice", "class": "ImageMCQDataset", "rows": 3,
        "source": str(w / "data/eval/qa.jsonl"), "not_exported_short_answer": 1}
    assert manifest["datasets"]["SICOG_EVAL_POPE"]["class"] == "ImageYORNDataset"
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rejects} == {"q4", "q5", "q6", "p6"}
    assert any("unreadable image" in r["reason"] for r in rejects if r["id"] == "q4")
    assert any("missing image" in r["reason"] for r in rejects if r["id"] == "p6")
    assert any("read back as missing" in r["reason"] for r in rejects if r["id"] == "q6")
    assert manifest["rejected"] == 4


def test_export_cli_registered(world, tmp_path):
    from sicog.cli import main

    w, _ = world
    out = tmp_path / "lmu"
    assert main(["world", "export-vlmeval", "--world", str(w), "--out", str(out), "--split", "eval",
                 "--prefix", "MINI"]) == 0
    assert (out / "MINI_QA.tsv").is_file() and (out / "MINI_POPE.tsv").is_file()


def test_export_rerun_replaces_rejects(world, tmp_path):
    w, _ = world
    out = tmp_path / "lmu"
    export_vlmeval(w, out)
    export_vlmeval(w, out)
    assert len((out / "rejects.jsonl").read_text().splitlines()) == 4
