"""training_scripts/uhdv1-dpo-qwen-stage0.sh: end to end on the tiny profile, and its variable checks."""
from __future__ import annotations

import json

import pytest
import yaml

from dpo_helpers import good_pairs, read_jsonl, write_pairs
from script_helpers import run_script
from train_fixtures import save_tiny_model

SCRIPT = "uhdv1-dpo-qwen-stage0.sh"


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """A model, a world folder holding the images, and a curation folder holding preferences.jsonl."""
    root = tmp_path_factory.mktemp("dpo_script")
    model = save_tiny_model(root / "model", seed=3)
    world = root / "world"
    pairs = good_pairs(world, 4)  # image paths relative to the world folder
    (root / "curation").mkdir()
    write_pairs(root / "curation" / "preferences.jsonl", pairs + [{**pairs[0], "id": "x", "rejected": pairs[0]["chosen"]}])
    return root, model, world


def test_dpo_script_runs_on_the_tiny_profile_with_its_defaults(layout):
    root, model, world = layout
    env = {"EXPERIMENT_NAME": "dpo", "OUTPUT_ROOT": str(root / "ckpt"), "WORLD_DIR": str(world),
           "CURATION_DIR": str(root / "curation"), "PREV_STAGE_CHECKPOINT": str(model), "DPO_BETA": "0.2",
           "DPO_SFT_WEIGHT": "0.5", "DPO_PRECOMPUTE_REF": "1", "FINETUNE_LEARNING_RATE": "1e-4",
           "FINETUNE_BATCH": "2", "GLOBAL_BATCH": "4", "ACCU_STEPS": "2", "OMP_NUM_THREADS": "1"}
    r = run_script(SCRIPT, env, "--max_steps", "2", "--peak_tflops", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    out = root / "ckpt" / "dpo"
    assert (out / "model.safetensors").is_file()
    cfg = yaml.safe_load((out / "train_config.yaml").read_text())
    assert cfg["stage"] == "dpo" and cfg["profile"] == "tiny"
    assert cfg["dpo_beta"] == 0.2 and cfg["dpo_sft_weight"] == 0.5 and cfg["dpo_precompute_ref"] is True
    assert cfg["data_path"] == str(root / "curation" / "preferences.jsonl") and cfg["image_folder"] == str(world)
    assert cfg["training"]["learning_rate"] == 1e-4 and cfg["training"]["gradient_accumulation_steps"] == 2
    assert "reference log-probs precomputed for 4 pairs" in r.stderr
    log = [x for x in read_jsonl(out / "train_log.jsonl") if "loss" in x]
    assert len(log) == 2 and all("rewards/margins" in x and "rewards/accuracies" in x for x in log)
    assert [x["reason"] for x in read_jsonl(out / "rejects.jsonl")] == [
        "malformed pair: chosen and rejected are the same text"]
    assert json.loads((out / "train_summary.json").read_text())["pairs"] == 4


@pytest.mark.parametrize("env, message", [
    ({}, "EXPERIMENT_NAME is not set"),
    ({"EXPERIMENT_NAME": "x", "CURATION_DIR": "{root}/nowhere"},
     "DATA_PATH='{root}/nowhere/preferences.jsonl' is not a file"),
    ({"EXPERIMENT_NAME": "x"}, "PREV_STAGE_CHECKPOINT is not set"),
    ({"EXPERIMENT_NAME": "x", "PREV_STAGE_CHECKPOINT": "{root}/missing"}, "PREV_STAGE_CHECKPOINT='{root}/missing' is not a folder"),
    ({"EXPERIMENT_NAME": "x", "PREV_STAGE_CHECKPOINT": "{model}", "DPO_BETA": "0"}, "DPO_BETA='0' must be a positive number"),
    ({"EXPERIMENT_NAME": "x", "PREV_STAGE_CHECKPOINT": "{model}", "DPO_BETA": "big"}, "DPO_BETA='big' must be a positive number"),
    ({"EXPERIMENT_NAME": "x", "PREV_STAGE_CHECKPOINT": "{model}", "DPO_SFT_WEIGHT": "-1"},
     "DPO_SFT_WEIGHT='-1' must be a non-negative number"),
    ({"EXPERIMENT_NAME": "x", "PREV_STAGE_CHECKPOINT": "{model}", "DPO_PRECOMPUTE_REF": "yes"},
     "DPO_PRECOMPUTE_REF='yes' must be one of: 0 1"),
    ({"EXPERIMENT_NAME": "x", "PREV_STAGE_CHECKPOINT": "{model}", "ZERO": "3"}, "ZERO=3 is not supported by the dpo stage"),
    ({"EXPERIMENT_NAME": "x", "PREV_STAGE_CHECKPOINT": "{model}", "FINETUNE_BATCH": "0"},
     "FINETUNE_BATCH='0' must be a positive integer"),
])
def test_dpo_script_validation_errors(layout, env, message):
    root, model, world = layout
    fill = {"root": str(root), "model": str(model)}
    env = {k: v.format(**fill) for k, v in env.items()}
    base = {"OUTPUT_ROOT": str(root / "bad"), "WORLD_DIR": str(world), "CURATION_DIR": str(root / "curation")}
    r = run_script(SCRIPT, {**base, **env})
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert message.format(**fill) in r.stderr
    assert not (root / "bad").exists()
