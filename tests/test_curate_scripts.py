"""The curation shell scripts end to end on tiny candidate files, and their variable checks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from script_helpers import free_port

from sicog.data.formats import CAPTION_PROMPTS, COD_HEADINGS, COT_HEADINGS, format_steps

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "quality_evaluation" / "scripts"
QUESTION = "<image>\nHow many cubes are there? Answer the question step-by-step."


def generation(task, prompt_name):
    return {"task": task, "prompt_name": prompt_name, "model": "stage0", "temperature": 0.7, "top_p": 0.9,
            "num_beams": 1, "max_new_tokens": 64, "seed": 0, "augment": None}


def caption_file(path):
    groups = [["A large red cube sits right of a small blue ball.", "A big red cube is right of a little blue ball.",
               "A red cube to the right of a small blue ball."],
              ["A green triangle.", "Boil the pasta for nine minutes.", "The market closed higher."]]
    with open(path, "w") as f:
        for k, group in enumerate(groups):
            cands = [format_steps(COD_HEADINGS, ["Objects.", "Details.", "Layout.", "Margins.", d]) for d in group]
            f.write(json.dumps({"id": f"c{k}", "image": f"{k}.png", "prompt": "<image>\n" + CAPTION_PROMPTS["cod-default"],
                                "candidates": cands, "generation": generation("caption", "cod-default")}) + "\n")


def reasoning_file(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    answers = [["2", "two", "Two."], ["3", "4", "3"], ["5", "6", "7"], ["1", "one", "2"]]
    with open(path, "w") as f:
        for k, group in enumerate(answers):
            cands = [format_steps(COT_HEADINGS, ["Count.", "Cubes.", f"Counting {i}.", a]) for i, a in enumerate(group)]
            f.write(json.dumps({"id": f"q{k}", "image": f"{k}.png", "prompt": QUESTION, "candidates": cands,
                                "generation": generation("reasoning", "cot-default")}) + "\n")


def run_script(name, tmp_path, *args, **env_vars):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAW_DATASET", "MODEL_NAME_OR_PATH", "ENCODER_MODEL_NAME_OR_PATH", "OUTPUT_DIR", "THRESHOLDS",
                        "METHOD", "SICOG_PROFILE", "NNODES", "NPROC_PER_NODE", "NODE_RANK", "WORLD_SIZE")}
    env.update(PYTHON=sys.executable, OUTPUT_ROOT=str(tmp_path / "runs"), OMP_NUM_THREADS="1", **env_vars)
    return subprocess.run(["bash", str(SCRIPTS / name), *args], env=env, capture_output=True, text=True, timeout=240,
                          cwd=tmp_path)


def test_recaption_script_end_to_end(tmp_path):
    cands = tmp_path / "captions.jsonl"
    caption_file(cands)
    out = tmp_path / "curated"
    proc = run_script("recaption_quality_eval.sh", tmp_path, "--padding-side", "right",
                      RAW_DATASET=str(cands), MODEL_NAME_OR_PATH="ckpt/perception",
                      OUTPUT_DIR=str(out), THRESHOLDS="0.7,0.9")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "ckpt/perception" and summary["method"] == "embedding"
    assert summary["encoder"].endswith("model") and summary["thresholds"] == [0.7, 0.9]
    assert summary["padding_side"] == "right"  # extra arguments reach `sicog curate`
    kept = [json.loads(line)["id"] for line in open(out / "curated_tau0.7.jsonl")]
    assert kept == ["c0"]  # the paraphrases agree; the unrelated texts do not
    assert (out / "plots" / "score_histogram.png").exists()


def test_reasoning_script_tiny_defaults_and_two_processes(tmp_path):
    reasoning_file(tmp_path / "runs" / "reasoning-cot" / "reasoning.jsonl")
    proc = run_script("reasoning_quality_eval.sh", tmp_path, METHOD="vote", THRESHOLDS="0.6,1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "runs" / "curation" / "reasoning"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"].endswith("stage0-reasoning")
    assert [json.loads(x)["id"] for x in open(out / "curated_tau1.jsonl")] == ["q0"]
    assert [json.loads(x)["id"] for x in open(out / "curated_tau0.6.jsonl")] == ["q0", "q1", "q3"]
    # The same through torchrun with two processes.
    proc = run_script("reasoning_quality_eval.sh", tmp_path, METHOD="vote", THRESHOLDS="0.6,1", NPROC_PER_NODE="2",
                      MASTER_PORT=str(free_port()), OUTPUT_DIR=str(tmp_path / "two"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["world_size"] == 2
    for name in ("curated_tau0.6.jsonl", "curated_tau1.jsonl", "preferences.jsonl", "scores.jsonl"):
        assert (tmp_path / "two" / name).read_text() == (out / name).read_text()


@pytest.mark.parametrize("script, env, variable", [
    ("recaption_quality_eval.sh", {}, "RAW_DATASET"),  # the tiny default file does not exist yet
    ("reasoning_quality_eval.sh", {"SICOG_PROFILE": "paper"}, "ENCODER_MODEL_NAME_OR_PATH"),
    ("reasoning_quality_eval.sh", {"SICOG_PROFILE": "huge"}, "SICOG_PROFILE"),
    ("reasoning_quality_eval.sh", {"THRESHOLDS": "0.8;0.9"}, "THRESHOLDS"),
    ("reasoning_quality_eval.sh", {"METHOD": "bleu"}, "METHOD"),
    ("recaption_quality_eval.sh", {"METHOD": "vote"}, "METHOD"),
    ("reasoning_quality_eval.sh", {"ENCODER_MODEL_NAME_OR_PATH": "/nonexistent/encoder"}, "ENCODER_MODEL_NAME_OR_PATH"),
    ("reasoning_quality_eval.sh", {"NNODES": "2", "NODE_RANK": "2"}, "NODE_RANK"),
    ("reasoning_quality_eval.sh", {"NPROC_PER_NODE": "0"}, "NPROC_PER_NODE"),
    ("reasoning_quality_eval.sh", {"TRUST_REMOTE_CODE": "yes"}, "TRUST_REMOTE_CODE"),
    ("reasoning_quality_eval.sh", {"ENCODER_DTYPE": "fp8"}, "ENCODER_DTYPE"),
    ("reasoning_quality_eval.sh", {"MODEL_NAME_OR_PATH": ""}, "MODEL_NAME_OR_PATH"),
])
def test_script_validation_names_the_variable(tmp_path, script, env, variable):
    if script == "reasoning_quality_eval.sh":
        reasoning_file(tmp_path / "runs" / "reasoning-cot" / "reasoning.jsonl")
    if env.get("MODEL_NAME_OR_PATH") == "":
        env = {**env, "SICOG_PROFILE": "paper", "ENCODER_MODEL_NAME_OR_PATH": str(tmp_path),
               "RAW_DATASET": str(tmp_path / "runs" / "reasoning-cot" / "reasoning.jsonl")}
    proc = run_script(script, tmp_path, **env)
    assert proc.returncode == 2
    assert variable in proc.stderr
    assert not (tmp_path / "runs" / "curation").exists()
