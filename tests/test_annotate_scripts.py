"""training_data_annotation/revise_cod.sh and revise_cot.sh, end to end and with bad variables."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from annotate_helpers import API_KEY, FakeTeacher, jsonl, make_dataset, rec, tagged

REPO = Path(__file__).resolve().parents[1]
COD_SH = REPO / "training_data_annotation" / "revise_cod.sh"
COT_SH = REPO / "training_data_annotation" / "revise_cot.sh"


def base_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "ORIGINAL_", "OUTPUT_", "IMAGE_", "WORLD_DIR", "SICOG_", "MODEL"))}
    env.update({"PYTHON": sys.executable, "PYTHONPATH": str(REPO), "SICOG_PROFILE": "paper", **extra})
    return env


def bash(script: Path, env: dict, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def cod_env(root: Path, url: str) -> dict:
    return base_env(ORIGINAL_CAPTION_FILE=str(root / "records.jsonl"), IMAGE_FOLDER=str(root / "images"),
                    OUTPUT_COD_DIR=str(root / "out" / "cod"), OUTPUT_DD_DIR=str(root / "out" / "dd"),
                    OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=url, MODEL="teacher-x", CONCURRENCY="3")


def test_revise_cod_end_to_end_from_env(tmp_path):
    make_dataset(tmp_path, 5)
    with FakeTeacher({"item-1": ["429"], "item-3": ["badformat"] * 2}) as teacher:
        done = bash(COD_SH, cod_env(tmp_path, teacher.url), "--max-attempts", "2", "--backoff-base", "0.01",
                    cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert {r["body"]["model"] for r in teacher.requests} == {"teacher-x"}
    assert [r["id"] for r in jsonl(tmp_path / "out" / "cod" / "cod.jsonl")] == ["item-0", "item-1", "item-2", "item-4"]
    assert len(jsonl(tmp_path / "out" / "dd" / "dd.jsonl")) == 4
    assert [f["id"] for f in jsonl(tmp_path / "out" / "cod" / "annotate_failures.jsonl")] == ["item-3"]
    assert API_KEY not in done.stdout + done.stderr
    summary = json.loads((tmp_path / "out" / "cod" / "annotate_summary.json").read_text())
    assert summary["annotated"] == 4 and summary["failed"] == 1


def test_revise_cod_reads_the_authors_image_dir(tmp_path):
    make_dataset(tmp_path, 1)
    env = cod_env(tmp_path, "http://127.0.0.1:9/v1")
    env["IMAGE_DIR"] = env.pop("IMAGE_FOLDER")
    done = bash(COD_SH, {**env, "DRY_RUN": "1"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"--image-folder {tmp_path / 'images'} " in done.stdout and "--teacher teacher-x " in done.stdout


def test_revise_cod_positional_arguments(tmp_path):
    make_dataset(tmp_path, 2)
    with FakeTeacher() as teacher:
        env = base_env(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=teacher.url)
        done = bash(COD_SH, env, "records.jsonl", "images", "c", "d", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(jsonl(tmp_path / "c" / "cod.jsonl")) == 2 and len(jsonl(tmp_path / "d" / "dd.jsonl")) == 2


@pytest.mark.parametrize("name, value, message", [
    ("ORIGINAL_CAPTION_FILE", None, "ORIGINAL_CAPTION_FILE is not set"),
    ("ORIGINAL_CAPTION_FILE", "nope.jsonl", "ORIGINAL_CAPTION_FILE='nope.jsonl' is not a file"),
    ("IMAGE_FOLDER", None, "IMAGE_FOLDER is not set"),
    ("IMAGE_FOLDER", "records.jsonl", "IMAGE_FOLDER='records.jsonl' is not a folder"),
    ("OUTPUT_COD_DIR", None, "OUTPUT_COD_DIR is not set"),
    ("OUTPUT_DD_DIR", None, "OUTPUT_DD_DIR is not set"),
    ("OPENAI_API_KEY", None, "OPENAI_API_KEY is not set"),
    ("OPENAI_BASE_URL", "localhost:8000", "must start with http:// or https://"),
    ("CONCURRENCY", "0", "CONCURRENCY='0' must be a positive integer"),
    ("CONCURRENCY", "lots", "CONCURRENCY='lots' must be a positive integer"),
    ("PYTHON", "no-such-python", "PYTHON='no-such-python' is not an executable"),
    ("SICOG_PROFILE", "huge", "SICOG_PROFILE='huge' must be one of: tiny paper"),
])
def test_revise_cod_names_the_bad_variable(tmp_path, name, value, message):
    make_dataset(tmp_path, 1)
    env = cod_env(tmp_path, "http://127.0.0.1:9/v1")
    if value is None:
        env.pop(name)
    else:
        env[name] = value
    done = bash(COD_SH, env, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "out").exists()


def test_revise_cot_end_to_end_and_bad_variables(tmp_path):
    records = [rec("a", tagged()), rec("b", "no tags at all")]
    src = tmp_path / "llava_cot.json"
    src.write_text(json.dumps(records))
    env = base_env(ORIGINAL_COT_FILE=str(src), OUTPUT_COT_DIR=str(tmp_path / "long"),
                   OUTPUT_SHORT_DIR=str(tmp_path / "short"))
    done = bash(COT_SH, env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [r["id"] for r in jsonl(tmp_path / "long" / "cot.jsonl")] == ["a"]
    assert jsonl(tmp_path / "short" / "short.jsonl")[0]["conversations"][1]["value"] == "3"
    assert jsonl(tmp_path / "long" / "cot_rejects.jsonl")[0]["id"] == "b"

    done = bash(COT_SH, base_env(), str(src), "p", "q", cwd=tmp_path)  # positional
    assert done.returncode == 0, done.stderr
    assert [r["id"] for r in jsonl(tmp_path / "p" / "cot.jsonl")] == ["a"]

    for name in ("ORIGINAL_COT_FILE", "OUTPUT_COT_DIR", "OUTPUT_SHORT_DIR"):
        bad = {k: v for k, v in env.items() if k != name}
        done = bash(COT_SH, bad, cwd=tmp_path)
        assert done.returncode == 2 and f"{name} is not set" in done.stderr
    done = bash(COT_SH, {**env, "SICOG_PROFILE": "tiny", "ORIGINAL_COT_FILE": ""}, cwd=tmp_path)
    assert done.returncode == 2 and "ORIGINAL_COT_FILE='runs/world/data/llava_cot_seed.json' is not a file" in done.stderr


def test_revise_cod_tiny_profile_without_a_world_says_what_to_do(tmp_path):
    # the world every script defaults to (runs/world), whatever OUTPUT_ROOT is
    done = bash(COD_SH, base_env(SICOG_PROFILE="tiny", OUTPUT_ROOT=str(tmp_path / "r")), cwd=tmp_path)
    assert done.returncode == 2
    assert "WORLD_DIR='runs/world' holds no built world (run: sicog world build --out runs/world)" in done.stderr
