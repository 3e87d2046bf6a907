"""Stage 1 saves the projector only, also under DeepSpeed (as the stage-1 script launches it): the
checkpoints hold the projector's weights and optimizer state and none of the frozen tower or LLM,
and a run resumed from one ends with the uninterrupted run's projector."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from script_helpers import SCRIPTS, TRAIN_VARS, free_port
from train_fixtures import make_world, read_log, save_tiny_model

STAGE1 = SCRIPTS / "uhdv1-pretrain-qwen-stage1-align.sh"



def _stage1(tmp_path, name, model, data, *args):
    env = {k: v for k, v in os.environ.items() if k not in TRAIN_VARS}
    env.update(PYTHON=sys.executable, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", EXPERIMENT_NAME=name,
               OUTPUT_ROOT=str(tmp_path / "ckpt"), DATA_PATH=str(data), MODEL_PATH=str(model), ZERO="2",
               NPROC_PER_NODE="1", GLOBAL_BATCH="2", PRETRAIN_BATCH="2", PRETRAIN_LEARNING_RATE="1e-3",
               MASTER_PORT=str(free_port()), SICOG_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run(["bash", str(STAGE1), "--warmup_steps", "0", *args], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp_path / "ckpt" / name


@pytest.mark.slow
def test_stage1_deepspeed_checkpoints_hold_the_projector_only_and_resume(tmp_path):
    pytest.importorskip("deepspeed")
    model = save_tiny_model(tmp_path / "model")
    data = make_world(tmp_path / "world", n_image=6, n_text=0, sizes=((112, 112), (98, 126)))
    full = _stage1(tmp_path, "full", model, data, "--max_steps", "3", "--save_steps", "1", "--save_total_limit", "3")
    ckpt = full / "checkpoint-1"
    assert (ckpt / "mm_projector.safetensors").is_file() and not (ckpt / "model.safetensors").exists()
    (states,) = ckpt.glob("global_step*/mp_rank_00_model_states.pt")
    module = torch.load(states, map_location="cpu", weights_only=False)["module"]
    # (the tiny tier ties the LM head to the input embedding; DeepSpeed drops frozen weights by
    # parameter name, and the tied alias has none: at paper scale, untied, nothing else is left)
    assert any(k.startswith("model.projector.") for k in module)  # DeepSpeed saves the model's own names
    assert {k for k in module if not k.startswith("model.projector.")} <= {"lm_head.weight"}
    projector = sum(v.numel() for k, v in load_file(str(ckpt / "mm_projector.safetensors")).items())
    model_params = sum(v.numel() for v in load_file(str(model / "model.safetensors")).values())
    files = sum(p.stat().st_size for p in ckpt.rglob("*") if p.is_file())
    # fp32 weights + Adam m, v of the projector (+ its bf16/fp32 copies and small state files), far
    # below one copy of the whole model
    assert files < 4 * model_params, (files, projector, model_params)

    # a run resumed from checkpoint-1 (a copy: it is the resumed run's own) ends with the same projector
    shutil.copytree(ckpt, tmp_path / "checkpoint-1")
    resumed = _stage1(tmp_path, "resumed", model, data, "--max_steps", "3", "--save_steps", "1",
                      "--resume_from_checkpoint", str(tmp_path / "checkpoint-1"))
    assert [x["step"] for x in read_log(resumed) if "loss" in x] == [2, 3]  # it did start from step 1
    a = load_file(str(full / "mm_projector.safetensors"))
    b = load_file(str(resumed / "mm_projector.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
