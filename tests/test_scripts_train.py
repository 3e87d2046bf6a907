"""The training stage scripts chained end to end on the tiny profile: stage 1 -> 1.5 -> 2."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_train_fixtures import make_world, save_tiny_model

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "training_scripts"
STAGE0 = "uhdv1-finetune-qwen-stage0-warmup.sh"
STAGE1 = "uhdv1-pretrain-qwen-stage1-align.sh"
STAGE15 = "uhdv1-finetune-qwen-stage15-sft.sh"
STAGE2 = "uhdv1-finetune-qwen-stage2-sft.sh"
TRAIN_VARS = ("EXPERIMENT_NAME", "DATA_PATH", "IMAGE_FOLDER", "PREV_STAGE_CHECKPOINT", "MM_PROJECTOR_CHECKPOINT",
              "LLM_CKPT_DIR", "MODEL_PATH", "PRETRAIN_LEARNING_RATE", "FINETUNE_LEARNING_RATE", "PRETRAIN_BATCH",
              "FINETUNE_BATCH", "ACCU_STEPS", "OUTPUT_ROOT", "SICOG_PROFILE", "ZERO", "GLOBAL_BATCH", "RESUME",
              "NNODES", "NPROC_PER_NODE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "WORLD_DIR", "WORLD_SIZE",
              "RANK", "LOCAL_RANK")


def run_script(name, env, *args):
    base = {k: v for k, v in os.environ.items() if k not in TRAIN_VARS}
    return subprocess.run(["bash", str(SCRIPTS / name), *args], env={**base, "PYTHON": sys.executable, **env},
                          cwd=env.get("_CWD", ROOT), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("scripts")
    model = save_tiny_model(root / "model")
    data = make_world(root / "world", n_image=4, n_text=2, sizes=((112, 112), (98, 126)))
    return root, model, data


@pytest.mark.slow
def test_stage_scripts_chain_on_tiny_profile(world):
    root, model, data = world
    common = {"OUTPUT_ROOT": str(root / "ckpt"), "WORLD_DIR": str(root / "world"), "DATA_PATH": str(data),
              "GLOBAL_BATCH": "2"}
    r = run_script(STAGE1, {**common, "EXPERIMENT_NAME": "align", "MODEL_PATH": str(model), "PRETRAIN_BATCH": "2",
                            "PRETRAIN_LEARNING_RATE": "1e-3"}, "--max_steps", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    align = root / "ckpt" / "align"
    assert (align / "mm_projector.safetensors").is_file()
    cfg = (align / "train_config.yaml").read_text()
    assert "learning_rate: 0.001" in cfg and f"image_folder: {root / 'world'}" in cfg

    r = run_script(STAGE15, {**common, "EXPERIMENT_NAME": "pretrain", "MM_PROJECTOR_CHECKPOINT": str(align),
                             "FINETUNE_BATCH": "1", "ACCU_STEPS": "2"}, "--max_steps", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (root / "ckpt" / "pretrain" / "model.safetensors").is_file()
    assert "loaded the projector from" in r.stderr

    r = run_script(STAGE2, {**common, "EXPERIMENT_NAME": "sft", "PREV_STAGE_CHECKPOINT": str(root / "ckpt" / "pretrain"),
                            "FINETUNE_BATCH": "2"}, "--max_steps", "1")
    assert r.returncode == 0, r.stderr[-3000:]
