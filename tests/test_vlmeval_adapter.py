"""The VLMEvalKit adapter: prompts and generation on its own, then VLMEvalKit's runner on exported TSVs."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tiny_models import build_random_tiny
from sicog.cli import main
from sicog.data.records import read_records
from sicog.evaluate.prompts import eval_prompt
from sicog.evaluate.runner import evaluate
from sicog.evaluate.settings import EVAL_CONFIGS_DIR, load_eval_config
from sicog.evaluate.vlmeval_adapter import SicogVLM, dataset_entries, vlmeval_config
from sicog.evaluate.vlmeval_export import decode_image, export_vlmeval
from sicog.world.build import build_world

HAVE_VLMEVAL = importlib.util.find_spec("vlmeval") is not None


def test_vlmeval_is_installed_where_required():
    """`make test` installs VLMEvalKit and sets SICOG_REQUIRE_VLMEVAL: the oracle-scoring tests below
    must run there, not be skipped because an install failed."""
    if os.environ.get("SICOG_REQUIRE_VLMEVAL") == "1":
        assert HAVE_VLMEVAL, "SICOG_REQUIRE_VLMEVAL=1 but `import vlmeval` fails: run `make install-eval`"
    else:
        pytest.skip("VLMEvalKit is optional outside `make test` (SICOG_REQUIRE_VLMEVAL unset)")
TYPES = {"SICOG_EVAL_QA": "multiple_choice", "SICOG_EVAL_POPE": "yes_no"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlmeval")
    world = root / "world"
    build_world(world, "micro", seed=0)
    manifest = export_vlmeval(world, root / "lmu")
    model, processor = build_random_tiny(seed=0)
    model.save_pretrained(root / "ckpt")
    processor.save_pretrained(root / "ckpt")
    raw = yaml.safe_load((EVAL_CONFIGS_DIR / "v1.yaml").read_text())
    raw.update(version="v1-test", max_new_tokens={"qa": 4, "pope": 3, "captions": 6})
    (root / "fast.yaml").write_text(yaml.safe_dump(raw))
    return {"root": root, "world": world, "lmu": root / "lmu", "manifest": manifest, "ckpt": root / "ckpt",
            "cfg": str(root / "fast.yaml"), "model": model, "processor": processor}


def _dump_image(root):
    """Stands in for VLMEvalKit's dataset.dump_image: the row's base64 image written to a file."""
    def dump(line):
        path = root / "dumped" / f"{line['id']}.png"
        path.parent.mkdir(exist_ok=True)
        decode_image(line["image"]).save(path)
        return [str(path)]
    return dump


def test_adapter_prompts_and_predictions_match_sicog_evaluate(setup):
    vlm = SicogVLM(model_path=str(setup["ckpt"]), eval_config=setup["cfg"], dataset_types=TYPES, device="cpu")
    vlm.set_dump_image(_dump_image(setup["root"]))
    cfg = load_eval_config(setup["cfg"])
    assert vlm.use_custom_prompt("SICOG_EVAL_QA") and vlm.use_custom_prompt("SICOG_EVAL_POPE")
    assert not vlm.use_custom_prompt("SICOG_CAPTIONS_OPENENDED")

    for name, bench in (("SICOG_EVAL_QA", "qa"), ("SICOG_EVAL_POPE", "pope")):
        frame = pd.read_csv(setup["lmu"] / f"{name}.tsv", sep="\t")
        # rows that store another row's index as their image are resolved the way VLMEvalKit does
        first = {str(i): v for i, v in zip(frame["index"], frame["image"])}
        ordered = read_records(setup["world"] / f"data/eval/{bench}.jsonl")
        records = {r["id"]: r for r in ordered}
        # sicog evaluate on the records up to the third exported row (the TSV keeps multiple choice only)
        limit = 1 + max(i for i, r in enumerate(ordered) if r["id"] in set(frame["id"][:3]))
        native = setup["root"] / f"native-{bench}"
        evaluate(setup["model"], setup["processor"], setup["world"], native, cfg, benchmarks=(bench,),
                 limit=limit, device="cpu")
        preds = {json.loads(x)["id"]: json.loads(x) for x in (native / "predictions" / f"{bench}.jsonl").read_text().splitlines()}
        for i in range(3):
            line = frame.iloc[i].copy()
            if len(str(line["image"])) <= 64:
                line["image"] = first[str(line["image"])]
            msg = vlm.build_prompt(line, dataset=name)
            assert [m["type"] for m in msg] == ["image", "text"]
            rec = records[line["id"]]
            assert "<image>\n" + msg[1]["value"] == eval_prompt(rec, bench, cfg)
            answer = vlm.generate_inner(msg, dataset=name)
            assert answer == preds[line["id"]]["prediction"]


def test_adapter_text_only_and_bad_types(setup):
    vlm = SicogVLM(model_path=str(setup["ckpt"]), eval_config=setup["cfg"], device="cpu")
    assert isinstance(vlm.generate_inner([{"type": "text", "value": "What is a circle?"}]), str)
    with pytest.raises(ValueError, match="dataset_types"):
        SicogVLM(model_path=str(setup["ckpt"]), dataset_types={"X": "essay"})


def test_config_json_lists_exported_datasets(setup):
    data, types = dataset_entries(sorted(TYPES), setup["manifest"])
    cfg = vlmeval_config("sicog-tiny", str(setup["ckpt"]), data, types, "v1")
    model = cfg["model"]["sicog-tiny"]
    assert model["class"] == "SicogVLM" and model["dataset_types"] == TYPES
    assert model["model_path"] == str(setup["ckpt"].resolve()) and model["eval_config"] == "v1"
    assert cfg["data"] == {"SICOG_EVAL_POPE": {"class": "ImageYORNDataset", "dataset": "SICOG_EVAL_POPE"},
                           "SICOG_EVAL_QA": {"class": "ImageMCQDataset", "dataset": "SICOG_EVAL_QA"}}


@pytest.mark.skipif(not HAVE_VLMEVAL, reason="VLMEvalKit (the `eval` extra, nvidia-vlmeval) is not installed")
def test_vlmevalkit_own_datasets_resolve_to_their_classes(setup):
    data, types = dataset_entries(["MMStar", "POPE", "SICOG_EVAL_QA"], setup["manifest"])
    assert data["MMStar"] == {"class": "ImageMCQDataset", "dataset": "MMStar"}
    assert data["POPE"] == {"class": "ImageYORNDataset", "dataset": "POPE"}
    assert types == {"SICOG_EVAL_QA": "multiple_choice"}     # VLMEvalKit's own types come from VLMEvalKit
    with pytest.raises(ValueError, match="neither exported"):
        dataset_entries(["NOT_A_BENCHMARK"], setup["manifest"])


@pytest.mark.skipif(not HAVE_VLMEVAL, reason="VLMEvalKit (the `eval` extra, nvidia-vlmeval) is not installed")
def test_vlmevalkit_runs_the_checkpoint_on_exported_tsvs(setup, monkeypatch, capsys):
    import torch

    from sicog.evaluate.vlmeval_adapter import import_vlmeval, register

    monkeypatch.setenv("LMUData", str(setup["lmu"]))
    assert issubclass(register(), import_vlmeval("vlmeval.vlm.base").BaseModel)
    assert torch.is_grad_enabled(), "importing VLMEvalKit must not switch autograd off for the process"
    work = setup["root"] / "vlmeval-out"
    limit = 4
    rc = main(["vlmeval", "--model", str(setup["ckpt"]), "--data-dir", str(setup["lmu"]),
               "--work-dir", str(work), "--eval-config", setup["cfg"], "--model-name", "sicog-tiny",
               "--limit", str(limit)])
    assert rc == 0, capsys.readouterr().err[-2000:]
    scores = json.loads((work / "vlmeval_scores.json").read_text())
    assert scores["version"] == "v1-test" and set(scores["scores"]) == set(TYPES)
    qa = scores["scores"]["SICOG_EVAL_QA"][0]
    assert 0.0 <= qa["Overall"] <= 1.0
    pope = {row["split"]: row for row in scores["scores"]["SICOG_EVAL_POPE"]}
    assert 0.0 <= pope["Overall"]["acc"] <= 100.0
    # VLMEvalKit's predictions are the adapter's greedy answers to the first `limit` rows.
    result = next((work / "sicog-tiny").glob("T*/sicog-tiny_SICOG_EVAL_POPE.xlsx"))
    frame = pd.read_excel(result)
    assert len(frame) == limit and frame["prediction"].map(lambda x: isinstance(x, str) or pd.isna(x)).all()


@pytest.mark.skipif(not HAVE_VLMEVAL, reason="VLMEvalKit (the `eval` extra, nvidia-vlmeval) is not installed")
def test_vlmevalkit_scores_gold_answers_as_perfect(setup, monkeypatch):
    """An oracle answering each row's gold (found from the image VLMEvalKit dumps as <index>.jpg) scores 100%."""
    gold = {}
    for name in TYPES:
        frame = pd.read_csv(setup["lmu"] / f"{name}.tsv", sep="\t")
        gold[name] = {str(i): str(a) for i, a in zip(frame["index"], frame["answer"])}

    def oracle(self, message, dataset=None):
        image = next(m["value"] for m in message if m["type"] == "image")
        return gold[dataset][Path(image).stem]

    monkeypatch.setenv("LMUData", str(setup["lmu"]))
    monkeypatch.setattr(SicogVLM, "generate_inner", oracle)
    work = setup["root"] / "vlmeval-oracle"
    rc = main(["vlmeval", "--model", str(setup["ckpt"]), "--data-dir", str(setup["lmu"]),
               "--work-dir", str(work), "--eval-config", setup["cfg"], "--model-name", "oracle"])
    assert rc == 0
    scores = json.loads((work / "vlmeval_scores.json").read_text())["scores"]
    qa = scores["SICOG_EVAL_QA"][0]
    assert qa["Overall"] == 1.0 and all(v == 1.0 for k, v in qa.items() if k != "split")
    pope = {row["split"]: row for row in scores["SICOG_EVAL_POPE"]}
    assert set(pope) == {"Overall", "random", "popular", "adversarial"}
    assert all(row["acc"] == 100.0 and row["Overall"] == 100.0 for row in pope.values())


def test_vlmeval_command_explains_what_is_missing(setup, monkeypatch, capsys, tmp_path):
    args = ["vlmeval", "--model", str(setup["ckpt"]), "--work-dir", str(tmp_path / "w")]
    if HAVE_VLMEVAL:
        assert main(args + ["--data-dir", str(tmp_path)]) == 2          # no export there
        assert "run `sicog world export-vlmeval" in capsys.readouterr().err
        assert main(args + ["--data-dir", str(setup["lmu"]), "--datasets", "NOT_A_BENCHMARK"]) == 2
        assert "neither exported" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "vlmeval.run", None)              # as when the extra is not installed
    assert main(args + ["--data-dir", str(setup["lmu"])]) == 2
    assert "install the eval extra" in capsys.readouterr().err
