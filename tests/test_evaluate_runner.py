"""`sicog evaluate` on a micro world with a random tiny model: files, scores, skips, resume, version."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from PIL import Image

from cli_helpers import sicog
from evaluate_helpers import eval_world
from tiny_models import build_random_tiny
from sicog.cli import main
from sicog.data.records import read_records, write_jsonl
from sicog.evaluate.generation import GreedyGenerator
from sicog.evaluate.runner import evaluate
from sicog.evaluate.settings import load_eval_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A micro world with one corrupt and one missing image, a saved random tiny model, a fast config."""
    return eval_world(tmp_path_factory.mktemp("eval"))


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _expected_skips(setup, benchmark: str, limit: int) -> dict[str, str]:
    recs = read_records(setup["world"] / f"data/eval/{benchmark}.jsonl")[:limit]
    return {r["id"]: setup["bad"][r["image"]] for r in recs if r["image"] in setup["bad"]}


def test_cli_writes_predictions_scores_and_summary(setup, capsys):
    out = setup["root"] / "run-cli"
    limit = 8
    rc = main(["evaluate", "--model", str(setup["ckpt"]), "--world", str(setup["world"]), "--out", str(out),
               "--limit", str(limit), "--eval-config", str(setup["cfg"]), "--device", "cpu"])
    assert rc == 0
    scores = json.loads((out / "scores.json").read_text())
    assert scores["version"] == "v1-test" and scores["split"] == "eval" and scores["limit"] == limit
    assert scores["long_side"] is None                         # the tiny checkpoint evaluates at the training layout
    assert set(scores["benchmarks"]) == {"qa", "pope", "captions"}
    for bench, entry in scores["benchmarks"].items():
        skips = _expected_skips(setup, bench, limit)
        preds = _lines(out / "predictions" / f"{bench}.jsonl")
        rejects = _lines(out / "rejects" / f"{bench}.jsonl")
        assert {r["id"]: r["reason"] for r in rejects} == skips
        assert entry["skipped"] == len(skips) and entry["evaluated"] == limit - len(skips) == len(preds)
        assert entry["skipped_by_reason"] == {k: list(skips.values()).count(k) for k in set(skips.values())}
        for p in preds:
            assert set(p) >= {"id", "prompt", "prediction", "gold", "version"}
            assert p["version"] == "v1-test" and p["prompt"].startswith("<image>\n")
            assert isinstance(p["prediction"], str)
        assert all(r["version"] == "v1-test" for r in rejects)
    assert scores["benchmarks"]["qa"]["skipped_by_reason"] == {"unreadable image": 2, "missing image": 2}
    assert scores["benchmarks"]["pope"]["evaluated"] > 0 and scores["benchmarks"]["captions"]["evaluated"] > 0
    qa = scores["benchmarks"]["qa"]["scores"]
    assert 0.0 <= qa["accuracy"] <= 1.0 and qa["n"] == scores["benchmarks"]["qa"]["evaluated"]
    assert set(qa["per_skill"]) <= {"count", "colour", "shape", "position", "relation", "text", "multi-step"}
    pope = scores["benchmarks"]["pope"]["scores"]
    assert set(pope["per_variant"]) <= {"random", "popular", "adversarial"} and 0.0 <= pope["f1"] <= 1.0
    captions = scores["benchmarks"]["captions"]["scores"]
    assert {"recall", "precision", "chair_i", "accuracy"} <= set(captions)
    gold = _lines(out / "predictions" / "captions.jsonl")[0]["gold"]
    assert "objects" in gold                                   # captions keep their scene graph as gold
    summary = (out / "summary.txt").read_text()
    assert summary.count("\n") == 1 and summary.startswith("[eval v1-test] split=eval")
    total_skips = sum(len(_expected_skips(setup, b, limit)) for b in ("qa", "pope", "captions"))
    assert f"skipped={total_skips}" in summary
    assert summary.strip() in capsys.readouterr().out


def test_scores_of_fixed_predictions(setup, monkeypatch):
    """Scores of known predictions, exact: QA answered right on every other evaluated record, POPE
    always right, captions left empty; over the evaluated records only (the skipped are not scored)."""
    limit = 8
    shown = {b: [r for r in read_records(setup["world"] / f"data/eval/{b}.jsonl")[:limit]
                 if r["image"] not in setup["bad"]] for b in ("qa", "pope", "captions")}
    answers = {"qa": iter([r["answer"] if i % 2 == 0 else "zzz" for i, r in enumerate(shown["qa"])]),
               "pope": iter([r["answer"] for r in shown["pope"]]), "captions": iter(["" for _ in shown["captions"]])}
    monkeypatch.setattr(GreedyGenerator, "generate", lambda self, items, bench: [next(answers[bench]) for _ in items])
    model, processor = build_random_tiny(seed=0)
    cfg = load_eval_config(str(setup["cfg"]))
    result = evaluate(model, processor, setup["world"], setup["root"] / "run-fixed", cfg, limit=limit, device="cpu")
    assert all(next(a, None) is None for a in answers.values())  # every record generated once, in order
    n_qa, n_pope = len(shown["qa"]), len(shown["pope"])
    qa = result["benchmarks"]["qa"]["scores"]
    assert (qa["n"], qa["missing"], qa["accuracy"]) == (n_qa, 0, ((n_qa + 1) // 2) / n_qa)
    assert sum(v["n"] for v in qa["per_skill"].values()) == n_qa
    pope = result["benchmarks"]["pope"]["scores"]
    assert any(r["answer"] == "yes" for r in shown["pope"]) and any(r["answer"] == "no" for r in shown["pope"])
    assert {k: pope[k] for k in ("accuracy", "precision", "recall", "f1", "invalid", "n")} == {
        "accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0, "invalid": 0, "n": n_pope}
    assert pope["yes_ratio"] == sum(r["answer"] == "yes" for r in shown["pope"]) / n_pope
    captions = result["benchmarks"]["captions"]["scores"]
    assert {k: captions[k] for k in ("n", "recall", "chair_i", "chair_s", "accuracy")} == {
        "n": len(shown["captions"]), "recall": 0.0, "chair_i": 0.0, "chair_s": 0.0, "accuracy": 0.0}


def test_resume_generates_only_missing_ids(setup, monkeypatch):
    model, processor = build_random_tiny(seed=0)
    cfg = load_eval_config(str(setup["cfg"]))
    generated: list[int] = []
    original = GreedyGenerator.generate

    def counting(self, items, benchmark):
        generated.append(len(items))
        return original(self, items, benchmark)

    monkeypatch.setattr(GreedyGenerator, "generate", counting)
    out = setup["root"] / "run-resume"
    kw = dict(split="eval", benchmarks=("qa",), model_name="tiny", device="cpu")
    evaluate(model, processor, setup["world"], out, cfg, limit=8, **kw)
    skips = _expected_skips(setup, "qa", 8)
    assert sum(generated) == 8 - len(skips)
    pred_file = out / "predictions" / "qa.jsonl"
    # A kill after two predictions, in the middle of writing the third.
    kept = pred_file.read_text().splitlines()[:2]
    pred_file.write_text("\n".join(kept) + "\n" + kept[0][:17])
    generated.clear()
    result = evaluate(model, processor, setup["world"], out, cfg, limit=10, **kw)
    skips = _expected_skips(setup, "qa", 10)
    assert sum(generated) == 10 - len(skips) - 2              # only the ids not done were generated
    lines = pred_file.read_text().splitlines()
    assert lines[:2] == kept
    ids = [json.loads(x)["id"] for x in lines]
    assert len(ids) == len(set(ids)) == 10 - len(skips)
    assert result["benchmarks"]["qa"]["evaluated"] == 10 - len(skips)
    assert result["benchmarks"]["qa"]["skipped"] == len(skips)
    # A second rerun finds everything done and generates nothing.
    generated.clear()
    evaluate(model, processor, setup["world"], out, cfg, limit=10, **kw)
    assert generated == []


def test_batched_predictions_match_single(setup):
    model, processor = build_random_tiny(seed=0)
    cfg = load_eval_config(str(setup["cfg"]))
    one = dataclasses.replace(cfg, batch_size=1)
    a = evaluate(model, processor, setup["world"], setup["root"] / "b4", cfg, benchmarks=("pope",), limit=8,
                 device="cpu")
    b = evaluate(model, processor, setup["world"], setup["root"] / "b1", one, benchmarks=("pope",), limit=8,
                 device="cpu")
    pa = _lines(setup["root"] / "b4" / "predictions" / "pope.jsonl")
    pb = _lines(setup["root"] / "b1" / "predictions" / "pope.jsonl")
    assert [(p["id"], p["prediction"]) for p in pa] == [(p["id"], p["prediction"]) for p in pb]
    assert a["benchmarks"]["pope"]["scores"] == b["benchmarks"]["pope"]["scores"]


def test_refuses_to_mix_runs_and_bad_arguments(setup):
    model, processor = build_random_tiny(seed=0)
    cfg = load_eval_config(str(setup["cfg"]))
    out = setup["root"] / "run-mix"
    evaluate(model, processor, setup["world"], out, cfg, benchmarks=("pope",), limit=2, device="cpu")
    with pytest.raises(ValueError, match="another run"):
        evaluate(model, processor, setup["world"], out, load_eval_config("v1"), benchmarks=("pope",), limit=2)
    with pytest.raises(ValueError, match="benchmark files not found"):
        evaluate(model, processor, setup["root"], setup["root"] / "nowhere", cfg)
    assert main(["evaluate", "--model", str(setup["ckpt"]), "--world", str(setup["world"]), "--out", str(out),
                 "--benchmarks", "qa,mmmu"]) == 2  # one line naming --benchmarks (tests/test_bad_inputs.py)


def test_malformed_and_repeated_records_are_reported(setup):
    """On the val split: a record with unusable options, one without an image, a repeated id."""
    val = setup["world"] / "data/val/qa.jsonl"
    recs = read_records(val)[:3]
    bad_options = {**recs[0], "id": "bad-options", "options": "A. one B. two"}
    no_image = {k: v for k, v in recs[1].items() if k != "image"} | {"id": "no-image"}
    repeated = {**recs[2], "prediction": "ignored"}
    write_jsonl(val, [*recs, bad_options, no_image, repeated])
    model, processor = build_random_tiny(seed=0)
    out = setup["root"] / "run-val"
    result = evaluate(model, processor, setup["world"], out, load_eval_config(str(setup["cfg"])), split="val",
                      benchmarks=("qa",), device="cpu")
    qa = result["benchmarks"]["qa"]
    assert result["split"] == "val"
    assert qa["records"] == 5 and qa["repeated_ids_ignored"] == 1
    assert qa["evaluated"] == 3 and qa["skipped_by_reason"] == {"bad record": 1, "missing image": 1}
    rejects = {r["id"]: r for r in _lines(out / "rejects" / "qa.jsonl")}
    assert "options must be a list or a dict" in rejects["bad-options"]["detail"]


def test_long_side_setting_reaches_the_processor(setup):
    model, processor = build_random_tiny(seed=0)
    cfg = load_eval_config(str(setup["cfg"]))
    assert cfg.long_side == "checkpoint"
    own = GreedyGenerator(model, processor, cfg)
    assert own.processor is processor and own.long_side == processor.layout.eval_long_side
    small = GreedyGenerator(model, processor, dataclasses.replace(cfg, long_side=56))
    assert small.long_side == 56 and processor.layout.eval_long_side == own.long_side   # caller's processor kept
    image = Image.new("RGB", (336, 224), (200, 30, 30))
    prompt = "<image>\nWhat is in the image?"
    assert len(small.encode(prompt, image)["input_ids"]) < len(own.encode(prompt, image)["input_ids"])


@pytest.mark.parametrize("n", [2, 3, 7, 50])
def test_shuffled_images_is_a_derangement(n):
    from sicog.evaluate.runner import shuffled_images

    records = [(f"r{i}", {"image": f"images/{i:03d}.png"}) for i in range(n)] * 2  # repeats share one image
    mapping = shuffled_images(records)
    assert sorted(mapping) == sorted(mapping.values()) == sorted({r["image"] for _, r in records})
    assert all(src != dst for src, dst in mapping.items())
    with pytest.raises(ValueError, match="at least 2 distinct images"):
        shuffled_images(records[:1])


def test_shuffled_images_control(setup, monkeypatch):
    """--images shuffled shows each record another record's image and scores it against its own gold."""
    shown = []
    real = GreedyGenerator.load_image

    def spy(self, path):
        shown.append(Path(path).relative_to(setup["world"]).as_posix())
        return real(self, path)

    monkeypatch.setattr(GreedyGenerator, "load_image", spy)
    out = setup["root"] / "run-shuffled"
    limit = 12
    rc = main(["evaluate", "--model", str(setup["ckpt"]), "--world", str(setup["world"]), "--out", str(out),
               "--limit", str(limit), "--eval-config", str(setup["cfg"]), "--device", "cpu", "--benchmarks", "qa",
               "--images", "shuffled"])
    assert rc == 0
    records = read_records(setup["world"] / "data/eval/qa.jsonl")[:limit]
    assert len(shown) == limit and all(s != r["image"] for s, r in zip(shown, records))
    preds = {p["id"]: p for p in _lines(out / "predictions/qa.jsonl")}
    for r in records:
        if r["id"] in preds:  # scored against the record's own answer, with the record's own image named
            assert preds[r["id"]]["gold"] == r["answer"] and preds[r["id"]]["image"] == r["image"]
    scores = json.loads((out / "scores.json").read_text())
    assert scores["images"] == "shuffled" and "images=shuffled" in (out / "summary.txt").read_text()
    rc, err = sicog("evaluate", "--model", str(setup["ckpt"]), "--world", str(setup["world"]), "--out", str(out),
                    "--limit", str(limit), "--eval-config", str(setup["cfg"]), "--device", "cpu", "--benchmarks", "qa")
    assert rc == 2 and "another run" in err  # a folder holds one image mode
