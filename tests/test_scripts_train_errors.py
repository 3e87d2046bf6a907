"""Validation errors of the training stage scripts: each names the variable it rejects."""
import pytest

from script_helpers import STAGE0, STAGE1, STAGE2, STAGE15, run_script
from train_fixtures import make_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("script_errors")
    model = root / "model"
    model.mkdir()  # the checks run before anything is loaded; a folder is enough
    data = make_world(root / "world", n_image=2, n_text=1)
    return root, model, data


@pytest.mark.parametrize("script, env, message", [
    (STAGE1, {}, "EXPERIMENT_NAME is not set"),
    (STAGE1, {"EXPERIMENT_NAME": "a b"}, "EXPERIMENT_NAME='a b' may hold only"),
    (STAGE1, {"EXPERIMENT_NAME": "x", "SICOG_PROFILE": "huge"}, "SICOG_PROFILE='huge' must be one of: tiny paper"),
    (STAGE1, {"EXPERIMENT_NAME": "x", "MODEL_PATH": "{model}"}, "DATA_PATH='{root}/nowhere/data/align.jsonl' is not a file"),
    (STAGE1, {"EXPERIMENT_NAME": "x", "DATA_PATH": "{data}"}, "MODEL_PATH is not set"),
    (STAGE1, {"EXPERIMENT_NAME": "x", "DATA_PATH": "{data}", "MODEL_PATH": "{model}", "PRETRAIN_BATCH": "two"},
     "PRETRAIN_BATCH='two' must be a positive integer"),
    (STAGE0, {"EXPERIMENT_NAME": "x", "DATA_PATH": "{data}"}, "PREV_STAGE_CHECKPOINT is not set"),
    (STAGE0, {"EXPERIMENT_NAME": "x", "DATA_PATH": "{data}", "PREV_STAGE_CHECKPOINT": "{model}",
              "FINETUNE_LEARNING_RATE": "fast"}, "FINETUNE_LEARNING_RATE='fast' must be a positive number"),
    (STAGE15, {"EXPERIMENT_NAME": "x"}, "DATA_PATH is not set"),
    (STAGE15, {"EXPERIMENT_NAME": "x", "DATA_PATH": "{data}"}, "MM_PROJECTOR_CHECKPOINT is not set"),
    (STAGE2, {"EXPERIMENT_NAME": "x", "DATA_PATH": "{data}"}, "PREV_STAGE_CHECKPOINT is not set"),
    (STAGE2, {"EXPERIMENT_NAME": "x", "DATA_PATH": "{data}", "PREV_STAGE_CHECKPOINT": "{model}", "ZERO": "1"},
     "ZERO='1' must be one of: 2 3 none"),
    (STAGE2, {"EXPERIMENT_NAME": "x", "DATA_PATH": "{data}", "PREV_STAGE_CHECKPOINT": "{model}", "NNODES": "2",
              "NODE_RANK": "2"}, "NODE_RANK=2 must be < NNODES=2"),
    (STAGE2, {"EXPERIMENT_NAME": "x", "DATA_PATH": "{data}", "PREV_STAGE_CHECKPOINT": "{model}", "ACCU_STEPS": "0"},
     "ACCU_STEPS='0' must be a positive integer"),
    # checked by `sicog train` against the global batch (16 on the tiny profile) and the world size (1)
    (STAGE2, {"EXPERIMENT_NAME": "x", "DATA_PATH": "{data}", "PREV_STAGE_CHECKPOINT": "{model}", "ACCU_STEPS": "3"},
     "gradient_accumulation_steps=3 disagrees with global batch 16"),
])
def test_script_validation_errors(world, script, env, message):
    root, model, data = world
    fill = {"model": str(model), "data": str(data), "root": str(root)}
    env = {k: v.format(**fill) for k, v in env.items()}
    r = run_script(script, {"WORLD_DIR": str(root / "nowhere"), "OUTPUT_ROOT": str(root / "bad"), **env})
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert message.format(**fill) in r.stderr
    assert not (root / "bad" / "x" / "model.safetensors").exists()
