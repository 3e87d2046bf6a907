"""Stage 0 supervision on the mini world with the scripts' tiny defaults: the CoD annotation goes
through the real client to the world's teacher, and both outputs must equal the world's gold seeds."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sicog.cli import main as sicog_main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("annotate_world")
    assert sicog_main(["world", "build", "--out", str(out / "world"), "--size", "micro", "--seed", "5"]) == 0
    return out


def tiny_env(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "ORIGINAL_", "OUTPUT_", "IMAGE_", "WORLD_DIR", "SICOG_", "MODEL"))}
    return {**env, "PYTHON": sys.executable, "PYTHONPATH": str(REPO), "OUTPUT_ROOT": str(root),
            "WORLD_DIR": str(root / "world")}


def canonical(path: Path) -> list[str]:
    text = path.read_text()
    records = json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines()]
    return [json.dumps(r, sort_keys=True) for r in records]


def test_revise_cod_with_the_world_teacher_reproduces_the_gold_seed(root):
    script = REPO / "training_data_annotation" / "revise_cod.sh"
    done = subprocess.run(["bash", str(script)], env=tiny_env(root), cwd=root, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "serving the world teacher" in done.stderr
    data = root / "world" / "data"
    assert canonical(root / "annotation" / "cod" / "cod.jsonl") == canonical(data / "cod_seed.jsonl")
    assert canonical(root / "annotation" / "dd" / "dd.jsonl") == canonical(data / "dd_seed.jsonl")
    summary = json.loads((root / "annotation" / "cod" / "annotate_summary.json").read_text())
    assert summary["model"] == "sicog-world-teacher"
    assert summary["annotated"] == summary["records"] > 0 and summary["failed"] == 0
    assert summary["this_run"]["prompt_tokens"] > 0 and summary["this_run"]["estimated_cost_usd"] > 0


def test_revise_cot_reproduces_the_gold_seed(root):
    script = REPO / "training_data_annotation" / "revise_cot.sh"
    done = subprocess.run(["bash", str(script)], env=tiny_env(root), cwd=root, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    data = root / "world" / "data"
    assert canonical(root / "annotation" / "cot" / "cot.jsonl") == canonical(data / "cot_seed.jsonl")
    assert canonical(root / "annotation" / "cot_short" / "short.jsonl") == canonical(data / "cot_short_seed.jsonl")
    assert (root / "annotation" / "cot" / "cot_rejects.jsonl").read_text() == ""
