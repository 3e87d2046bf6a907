"""Every bad input stops with a non-zero exit and one line that names the argument or file: no
traceback, no silent success. One table, each case run the way a user runs it (the `sicog` command
in-process, the stage scripts through bash)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import sicog
from train_fixtures import make_world, save_tiny_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    model = save_tiny_model(root / "model")
    data = make_world(root / "world", n_image=2, n_text=0, sizes=((112, 112),))
    (root / "afile").write_text("x\n")
    (root / "empty.jsonl").write_text("")
    (root / "latin1.jsonl").write_bytes(b'{"id": "a"}\n{"id": "caf\xe9"}\n')
    (root / "folder").mkdir()
    (root / "world.jsonl").mkdir()  # a folder named like a data file
    (root / "fakeworld").mkdir()
    (root / "fakeworld" / "world.jsonl").write_text("{}\n")  # passes the world check, has no benchmarks
    cands = [{"id": f"c{i}", "candidates": ["a red square", "a red square."], "image": "images/img0.png"}
             for i in range(2)]
    (root / "cands.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cands))
    for name, change in (("noconfig", "delete"), ("llama", "llama"), ("noweights", "weights")):
        bad = root / name
        shutil.copytree(model, bad)
        if change == "delete":
            (bad / "config.json").unlink()
        elif change == "llama":
            cfg = json.loads((bad / "config.json").read_text())
            (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
        else:
            (bad / "model.safetensors").unlink()
    return root, model, data


def _cases(root: Path, model: Path, data: Path) -> list[tuple[str, list[str], str]]:
    images = str(data.parent)
    gen = ["generate", "--model", str(model), "--image-folder", images, "--num-candidates", "2",
           "--max-new-tokens", "4"]
    train = ["train", "--stage", "stage2", "--global-batch-size", "2", "--per_device_train_batch_size", "1"]
    evaluate = ["evaluate", "--model", str(model)]
    curate = ["curate", "--method", "vote"]
    prefs = ["build-preferences", "--out", f"{root}/p/pairs.jsonl"]
    probe = ["probe", "--model", str(model)]
    return [
        # (name, argv, what the message must name)
        ("generate --out below a file", gen + ["--data", str(data), "--out", f"{root}/afile/c.jsonl"], "--out"),
        ("generate --out is a folder", gen + ["--data", str(data), "--out", str(root / "folder")], "is a folder"),
        ("generate --data is a folder", gen + ["--data", str(root / "folder"), "--out", f"{root}/g/c.jsonl"],
         "--data"),
        ("generate --data empty", gen + ["--data", str(root / "empty.jsonl"), "--out", f"{root}/g/c.jsonl"],
         "holds no records"),
        ("generate --data not UTF-8", gen + ["--data", str(root / "latin1.jsonl"), "--out", f"{root}/g/c.jsonl"],
         "latin1.jsonl:2: not UTF-8"),
        ("generate --data missing", gen + ["--data", str(root / "nope.jsonl"), "--out", f"{root}/g/c.jsonl"],
         "no such file"),
        ("generate --model without config.json",
         ["generate", "--model", str(root / "noconfig"), "--image-folder", images, "--data", str(data),
          "--out", f"{root}/g1/c.jsonl"], "has no config.json"),
        ("generate --model of another type",
         ["generate", "--model", str(root / "llama"), "--image-folder", images, "--data", str(data),
          "--out", f"{root}/g2/c.jsonl"], "type 'llama'"),
        ("generate --model without weights",
         ["generate", "--model", str(root / "noweights"), "--image-folder", images, "--data", str(data),
          "--out", f"{root}/g3/c.jsonl"], "has no weights"),
        ("generate --image-folder missing", gen + ["--data", str(data), "--out", f"{root}/g/c.jsonl",
                                                   "--image-folder", str(root / "nope")], "--image-folder"),
        ("train --output_dir is a file", train + ["--model-name-or-path", str(model), "--data-path", str(data),
                                                  "--output_dir", str(root / "afile")], "--output_dir"),
        ("train --data-path is a folder", train + ["--model-name-or-path", str(model), "--data-path",
                                                   str(root / "folder"), "--output_dir", f"{root}/t"], "--data-path"),
        ("train --data-path empty", train + ["--model-name-or-path", str(model), "--data-path",
                                             str(root / "empty.jsonl"), "--output_dir", f"{root}/t"],
         "holds no records"),
        ("train --model-name-or-path without config.json",
         train + ["--model-name-or-path", str(root / "noconfig"), "--data-path", str(data), "--output_dir",
                  f"{root}/t"], "has no config.json"),
        ("train --model-name-or-path of another type",
         train + ["--model-name-or-path", str(root / "llama"), "--data-path", str(data), "--output_dir",
                  f"{root}/t"], "not a SICOG model"),
        ("evaluate --out is a file", evaluate + ["--world", str(root / "fakeworld"), "--out", str(root / "afile")],
         "--out"),
        ("evaluate --world without benchmarks", evaluate + ["--world", str(root / "fakeworld"), "--out",
                                                            f"{root}/e0"], "benchmark files not found"),
        ("evaluate --world not a world", evaluate + ["--world", str(root / "folder"), "--out", f"{root}/e"],
         "--world"),
        ("evaluate --model without config.json",
         ["evaluate", "--model", str(root / "noconfig"), "--world", str(root), "--out", f"{root}/e"],
         "has no config.json"),
        ("evaluate --eval-config unknown", evaluate + ["--world", str(root / "fakeworld"), "--out", f"{root}/e",
                                                       "--eval-config", "v999"], "--eval-config"),
        ("curate --out is a file", curate + ["--candidates", str(root / "cands.jsonl"), "--out",
                                             str(root / "afile")], "--out"),
        ("curate --encoder missing", ["curate", "--candidates", str(root / "cands.jsonl"), "--out",
                                      f"{root}/cu", "--encoder", str(root / "no-encoder")], "--encoder"),
        ("curate --thresholds above 1", curate + ["--candidates", str(root / "cands.jsonl"), "--out",
                                                  f"{root}/cu", "--thresholds", "0.8,1.5"], "[0, 1]"),
        ("curate --thresholds below 0", curate + ["--candidates", str(root / "cands.jsonl"), "--out",
                                                  f"{root}/cu", "--thresholds=-0.1,0.8"], "[0, 1]"),
        ("curate --candidates empty", curate + ["--candidates", str(root / "empty.jsonl"), "--out", f"{root}/cu"],
         "holds no records"),
        ("curate --candidates is a folder", curate + ["--candidates", str(root / "folder"), "--out",
                                                      f"{root}/cu"], "--candidates"),
        ("convert-cot --input empty", ["convert-cot", "--input", str(root / "empty.jsonl"), "--output-cot-dir",
                                       f"{root}/cot", "--output-short-dir", f"{root}/short"], "holds no records"),
        ("convert-cot --input is a folder", ["convert-cot", "--input", str(root / "world.jsonl"),
                                             "--output-cot-dir", f"{root}/cot", "--output-short-dir",
                                             f"{root}/short"], "is a folder"),
        ("convert-cot --output-cot-dir is a file", ["convert-cot", "--input", str(data), "--output-cot-dir",
                                                    str(root / "afile"), "--output-short-dir", f"{root}/short"],
         "--output-cot-dir"),
        ("annotate-cod --input empty", ["annotate-cod", "--input", str(root / "empty.jsonl"), "--image-folder", images,
                                        "--output-cod-dir", f"{root}/cod", "--output-dd-dir", f"{root}/dd",
                                        "--base-url", "http://127.0.0.1:9/v1"], "holds no records"),
        ("annotate-cod --output-dd-dir is a file", ["annotate-cod", "--input", str(data), "--image-folder", images,
                                                    "--output-cod-dir", f"{root}/cod", "--output-dd-dir",
                                                    str(root / "afile"), "--base-url", "http://127.0.0.1:9/v1"],
         "--output-dd-dir"),
        ("annotate-cod --world-teacher not a world", ["annotate-cod", "--input", str(data), "--image-folder", images,
                                                      "--output-cod-dir", f"{root}/cod", "--output-dd-dir",
                                                      f"{root}/dd", "--world-teacher", str(root / "folder")],
         "--world-teacher"),
        ("merge-candidates --out is a folder", ["merge-candidates", "--inputs", str(data), "--shards",
                                                f"{root}/x*.jsonl", "--out", str(root / "folder")], "--out"),
        ("merge-candidates --inputs empty", ["merge-candidates", "--inputs", str(root / "empty.jsonl"), "--shards",
                                             f"{root}/x*.jsonl", "--out", f"{root}/m.jsonl"], "holds no records"),
        ("merge-candidates --inputs missing", ["merge-candidates", "--inputs", str(root / "nope.jsonl"), "--shards",
                                               f"{root}/x*.jsonl", "--out", f"{root}/m.jsonl"], "--inputs"),
        ("merge-candidates --shards match nothing", ["merge-candidates", "--inputs", str(data), "--shards",
                                                     f"{root}/x*.jsonl", "--out", f"{root}/m.jsonl"],
         "--shards: no candidate shards match"),
        ("merge-candidates --chunk malformed", ["merge-candidates", "--inputs", str(data), "--shards",
                                                f"{root}/x*.jsonl", "--out", f"{root}/m.jsonl", "--chunk", "1-4"],
         "--chunk"),
        ("build-preferences --source noisy without --noisy", prefs + ["--source", "noisy", "--curated",
                                                                      str(root / "cands.jsonl")], "needs --noisy"),
        ("build-preferences --pairs missing", prefs + ["--source", "curation", "--pairs", str(root / "nope.jsonl")],
         "--pairs"),
        ("build-preferences --pairs empty", prefs + ["--source", "curation", "--pairs", str(root / "empty.jsonl")],
         "holds no records"),
        ("build-preferences --curated is a folder", prefs + ["--source", "noisy", "--noisy", str(root / "cands.jsonl"),
                                                             "--curated", str(root / "folder")], "--curated"),
        ("build-preferences --out is a folder", ["build-preferences", "--source", "curation", "--pairs",
                                                 str(root / "cands.jsonl"), "--out", str(root / "folder")], "--out"),
        ("probe --parts unknown", probe + ["--world", str(root / "fakeworld"), "--parts", "probes,x"], "--parts"),
        ("probe --n-train 0", probe + ["--world", str(root / "fakeworld"), "--n-train", "0"], "--n-train"),
        ("probe --world not a world", probe + ["--world", str(root / "folder")], "--world"),
        ("probe --model without config.json", ["probe", "--model", str(root / "noconfig"), "--world",
                                               str(root / "fakeworld")], "has no config.json"),
        ("probe --vision not a CLIP folder", ["probe", "--vision", str(root / "folder"), "--world",
                                              str(root / "fakeworld")], "--vision"),
        ("probe --train-split without images", probe + ["--world", str(root / "fakeworld"), "--parts", "probes"],
         "--train-split"),
        ("probe --world without benchmarks", probe + ["--world", str(root / "fakeworld"), "--parts", "answers"],
         "benchmark files not found"),
        ("probe --eval-config unknown", probe + ["--world", str(root / "fakeworld"), "--parts", "answers",
                                                 "--eval-config", "v999"], "--eval-config"),
        ("probe --out is a folder", probe + ["--world", str(root / "fakeworld"), "--parts", "answers",
                                             "--out", str(root / "folder")], "--out"),
        ("train --learning_rate negative", train + ["--model-name-or-path", str(model), "--data-path", str(data),
                                                    "--output_dir", f"{root}/t", "--learning_rate", "-1"],
         "learning_rate must be a number at least 0"),
        ("train --stage unknown", ["train", "--stage", "stage9", "--model-name-or-path", str(model), "--data-path",
                                   str(data), "--output_dir", f"{root}/t"], "unknown stage 'stage9'"),
        ("train --image-folder missing", train + ["--model-name-or-path", str(model), "--data-path", str(data),
                                                  "--output_dir", f"{root}/t", "--image-folder", str(root / "nope")],
         "--image-folder"),
        ("train --mm-projector-checkpoint missing", ["train", "--stage", "stage1_5", "--mm-projector-checkpoint",
                                                     str(root / "nope"), "--data-path", str(data), "--output_dir",
                                                     f"{root}/t"], "--mm-projector-checkpoint"),
        ("train --data_path (LLaVA's spelling) is a folder", train + ["--model_name_or_path", str(model), "--data_path",
                                                                     str(root / "folder"), "--output_dir", f"{root}/t"],
         "--data-path"),
        ("annotate-cod without --image-folder", ["annotate-cod", "--input", str(data), "--output-cod-dir",
                                                 f"{root}/cod", "--output-dd-dir", f"{root}/dd", "--base-url",
                                                 "http://127.0.0.1:9/v1"], "--image-folder is required"),
        ("annotate-cod --max-attempts 0", ["annotate-cod", "--input", str(data), "--image-folder", images,
                                           "--output-cod-dir", f"{root}/cod", "--output-dd-dir", f"{root}/dd",
                                           "--base-url", "http://127.0.0.1:9/v1", "--max-attempts", "0"],
         "--max-attempts 0"),
        ("annotate-cod --timeout 0", ["annotate-cod", "--input", str(data), "--image-folder", images,
                                      "--output-cod-dir", f"{root}/cod", "--output-dd-dir", f"{root}/dd",
                                      "--base-url", "http://127.0.0.1:9/v1", "--timeout", "0"], "--timeout"),
        ("evaluate --benchmarks unknown", evaluate + ["--world", str(root / "fakeworld"), "--out", f"{root}/e",
                                                      "--benchmarks", "qa,nope"], "--benchmarks: unknown 'nope'"),
        ("evaluate --benchmarks names none", evaluate + ["--world", str(root / "fakeworld"), "--out", f"{root}/e",
                                                         "--benchmarks", ","], "--benchmarks"),
        ("evaluate --limit 0", evaluate + ["--world", str(root / "fakeworld"), "--out", f"{root}/e", "--limit", "0"],
         "--limit 0"),
        ("curate --min-candidates 0", curate + ["--candidates", str(root / "cands.jsonl"), "--out", f"{root}/cu",
                                                "--min-candidates", "0"], "--min-candidates 0"),
        ("curate --batch-size 0", curate + ["--candidates", str(root / "cands.jsonl"), "--out", f"{root}/cu",
                                            "--batch-size", "0"], "--batch-size 0"),
        ("annotate-cod --concurrency 0", ["annotate-cod", "--input", str(data), "--image-folder", images,
                                          "--output-cod-dir", f"{root}/cod", "--output-dd-dir", f"{root}/dd",
                                          "--base-url", "http://127.0.0.1:9/v1", "--concurrency", "0"],
         "--concurrency 0"),
        ("build-preferences --rejects is --out", prefs + ["--source", "curation", "--pairs", str(root / "cands.jsonl"),
                                                          "--rejects", f"{root}/p/pairs.jsonl"], "--rejects"),
        ("build-model --vision missing", ["build-model", "--vision", str(root / "nope"), "--llm", str(model),
                                          "--out", f"{root}/bm"], "--vision"),
        ("build-model --vision of another type", ["build-model", "--vision", str(model), "--llm", str(model),
                                                  "--out", f"{root}/bm"], "--vision"),
        ("build-model --tier unknown", ["build-model", "--vision", str(model), "--llm", str(model), "--tier",
                                        "no-such-tier", "--out", f"{root}/bm"], "--tier"),
        ("build-model --out is a file", ["build-model", "--vision", str(model), "--llm", str(model),
                                         "--out", str(root / "afile")], "--out"),
        ("import-checkpoint --in missing", ["import-checkpoint", "--from", "authors", "--in", str(root / "nope"),
                                            "--out", f"{root}/ic"], "--in"),
        ("import-checkpoint --out is a file", ["import-checkpoint", "--from", "authors", "--in", str(root / "folder"),
                                               "--out", str(root / "afile")], "--out"),
        ("vlmeval --model without config.json", ["vlmeval", "--model", str(root / "noconfig"), "--data-dir",
                                                      str(root / "folder"), "--work-dir", f"{root}/vw"],
         "--model"),
        ("vlmeval --work-dir is a file", ["vlmeval", "--model", str(model), "--data-dir", str(root / "folder"),
                                          "--work-dir", str(root / "afile")], "--work-dir"),
        ("vlmeval without --model", ["vlmeval", "--data-dir", str(root / "folder"), "--work-dir", f"{root}/vw"],
         "--model is required"),
        ("vlmeval --limit 0", ["vlmeval", "--model", str(model), "--data-dir", str(root / "folder"),
                               "--work-dir", f"{root}/vw", "--limit", "0"], "--limit 0"),
        ("reproduce --size unknown", ["reproduce", "--out", f"{root}/rp", "--size", "huge"], "--size"),
        ("reproduce --rows unknown", ["reproduce", "--out", f"{root}/rp", "--size", "micro", "--rows", "sicog,nope"],
         "--rows"),
        ("reproduce --seeds not integers", ["reproduce", "--out", f"{root}/rp", "--size", "micro", "--seeds", "a,b"],
         "--seeds"),
        ("reproduce --out is a file", ["reproduce", "--out", str(root / "afile"), "--size", "micro"], "--out"),
        ("world build --out is a file", ["world", "build", "--out", str(root / "afile")], "--out"),
        ("world build --out holds something else", ["world", "build", "--out", str(root / "world")], "holds no world"),
        ("world pretrain --world not a world", ["world", "pretrain", "--world", str(root / "folder"), "--out",
                                                f"{root}/pt"], "--world"),
        ("world pretrain --world without a tokenizer", ["world", "pretrain", "--world", str(root / "fakeworld"),
                                                        "--out", f"{root}/pt"], "has no tokenizer"),
        ("world pretrain --steps 0", ["world", "pretrain", "--world", str(root / "fakeworld"), "--out", f"{root}/pt",
                                      "--steps", "0"], "--steps 0"),
        ("world teacher --world not a world", ["world", "teacher", "--world", str(root / "folder")], "--world"),
        ("world export-vlmeval --world not a world", ["world", "export-vlmeval", "--world", str(root / "folder"),
                                                      "--out", f"{root}/vl"], "--world"),
        ("world export-vlmeval --world without benchmarks", ["world", "export-vlmeval", "--world",
                                                             str(root / "fakeworld"), "--out", f"{root}/vl"],
         "has no data/eval/qa.jsonl"),
        ("world export-vlmeval --out is a file", ["world", "export-vlmeval", "--world", str(root / "fakeworld"),
                                                  "--out", str(root / "afile")], "--out"),
    ]


CASE_NAMES = [c[0] for c in _cases(Path("r"), Path("m"), Path("d/data.jsonl"))]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_stops_with_one_line_naming_it(w, name, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    argv, named = next((argv, named) for n, argv, named in _cases(*w) if n == name)
    rc, err = sicog(*argv)
    assert rc == 2, (name, rc, err)
    assert named in err, (name, err)
    assert "Traceback" not in err


def test_annotate_cod_without_an_api_key_names_the_variable(w, monkeypatch):
    root, model, data = w
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    rc, err = sicog("annotate-cod", "--input", str(data), "--image-folder", str(data.parent), "--output-cod-dir",
                    f"{root}/cod", "--output-dd-dir", f"{root}/dd", "--base-url", "http://127.0.0.1:9/v1")
    assert rc == 2 and "OPENAI_API_KEY is not set" in err and "Traceback" not in err


def test_a_non_utf8_candidate_line_is_rejected_alone(w, tmp_path):
    """Not read with replaced bytes (a silently different record): that line goes to the rejects with why."""
    root, model, data = w
    good = (root / "cands.jsonl").read_text().splitlines()[0]
    (tmp_path / "c.jsonl").write_bytes(good.encode() + b'\n{"id": "caf\xe9", "candidates": ["a", "a"]}\n')
    rc, err = sicog("curate", "--method", "vote", "--candidates", str(tmp_path / "c.jsonl"), "--out",
                    str(tmp_path / "cu"))
    assert "Traceback" not in err
    rejects = [json.loads(x) for x in (tmp_path / "cu" / "rejects.jsonl").read_text().splitlines()]
    assert {"id": None, "line": 2, "reason": "not UTF-8 text (byte 0xe9)", "stage": "input"} in rejects
    assert "caf\ufffd" not in (tmp_path / "cu" / "rejects.jsonl").read_text()


def test_debug_flag_shows_the_traceback_of_a_bad_input(w):
    root, model, data = w
    from sicog.data.checks import InputError

    with pytest.raises(InputError, match="holds no records"):
        from sicog.cli import main

        main(["--debug", "convert-cot", "--input", str(root / "empty.jsonl"), "--output-cot-dir", f"{root}/c2",
              "--output-short-dir", f"{root}/s2"])


def test_annotate_cod_fails_when_every_record_failed(w, tmp_path, monkeypatch):
    root, model, data = w
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    rc, err = sicog("annotate-cod", "--input", str(data), "--image-folder", str(root / "folder"),  # no images there
                    "--output-cod-dir", str(tmp_path / "cod"), "--output-dd-dir", str(tmp_path / "dd"),
                    "--base-url", "http://127.0.0.1:9/v1")
    assert rc == 1
    failures = (tmp_path / "cod" / "annotate_failures.jsonl").read_text().splitlines()
    assert len(failures) == 2 and all(json.loads(x)["reason"] == "missing image" for x in failures)


def test_annotate_cod_masks_credentials_of_the_base_url(w, tmp_path, monkeypatch, caplog):
    root, model, data = w
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    caplog.set_level("INFO")
    sicog("annotate-cod", "--input", str(data), "--image-folder", str(root / "folder"),
          "--output-cod-dir", str(tmp_path / "cod"), "--output-dd-dir", str(tmp_path / "dd"),
          "--base-url", "http://user:PASSWORD@127.0.0.1:9/v1?api-key=SECRETKEY&api-version=1")
    assert "127.0.0.1:9/v1" in caplog.text and "api-version=1" in caplog.text
    assert "PASSWORD" not in caplog.text and "SECRETKEY" not in caplog.text and "user:" not in caplog.text


def _script(path: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / path)], env={**os.environ, "PYTHON": sys.executable, **env},
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("path, env, named", [
    ("quality_evaluation/scripts/recaption_quality_eval.sh", {"THRESHOLDS": "0.8,1.5"}, "THRESHOLDS"),
    ("training_scripts/uhdv1-finetune-qwen-stage2-sft.sh", {"PYTHON": "/nonexistent/python"}, "PYTHON"),
    ("training_scripts/uhdv1-pretrain-qwen-stage1-align.sh", {"PYTHON": "/nonexistent/python"}, "PYTHON"),
])
def test_scripts_name_the_bad_variable(w, path, env, named):
    root, model, data = w
    base = {"EXPERIMENT_NAME": "x", "DATA_PATH": str(data), "MODEL_PATH": str(model), "OUTPUT_ROOT": str(root / "o"),
            "RAW_DATASET": str(root / "cands.jsonl"), "MODEL_NAME_OR_PATH": str(model),
            "OUTPUT_DIR": str(root / "o" / "cur")}
    r = _script(path, {**base, **env})
    assert r.returncode == 2, r.stderr
    assert named in r.stderr and "error" in r.stderr
