"""DRY_RUN=1: every stage script prints its exact launch command and exits 0 without starting anything;
the training stages also print the resolved config and the batch arithmetic for the whole layout."""
import json
import os
import sys
from pathlib import Path

import pytest

from script_helpers import ROOT, TRAIN_VARS, run_script
from train_fixtures import save_tiny_model

LAYOUT = {"NNODES": "4", "NPROC_PER_NODE": "8", "NODE_RANK": "1", "MASTER_ADDR": "10.1.2.3", "MASTER_PORT": "29501",
          "DRY_RUN": "1", "SICOG_PROFILE": "paper"}
TORCHRUN = (f"{sys.executable} -m torch.distributed.run --nnodes 4 --nproc_per_node 8 --node_rank 1 "
            "--master_addr 10.1.2.3 --master_port 29501 -m sicog train ")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    # a real saved model: the dry run checks the folder as the launch would (sicog.model.folder)
    return save_tiny_model(tmp_path_factory.mktemp("dry") / "model")


@pytest.fixture()
def files(tmp_path, tiny_model):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"id": "a", "conversations": [{"from": "human", "value": "hi"},
                                                             {"from": "gpt", "value": "yes"}]}) + "\n")
    (tmp_path / "proj.safetensors").write_bytes(b"")
    return tmp_path, data, tiny_model


@pytest.mark.parametrize("script, env, stage, per_device, global_batch, accumulation", [
    ("uhdv1-pretrain-qwen-stage1-align.sh", {"MODEL_PATH": "{model}"}, "stage1", 8, 256, 1),
    ("uhdv1-finetune-qwen-stage0-warmup.sh", {"PREV_STAGE_CHECKPOINT": "{model}"}, "stage0", 4, 128, 1),
    ("uhdv1-finetune-qwen-stage15-sft.sh", {"MM_PROJECTOR_CHECKPOINT": "{proj}", "MODEL_PATH": "{model}"},
     "stage1_5", 4, 128, 1),
    ("uhdv1-finetune-qwen-stage2-sft.sh", {"PREV_STAGE_CHECKPOINT": "{model}", "FINETUNE_BATCH": "2"},
     "stage2", 2, 128, 2),
    ("uhdv1-dpo-qwen-stage0.sh", {"PREV_STAGE_CHECKPOINT": "{model}"}, "dpo", 2, 128, 2),
])
def test_training_dry_run_on_node_1_of_4x8(files, script, env, stage, per_device, global_batch, accumulation):
    tmp, data, model = files
    env = {k: v.format(model=model, proj=tmp / "proj.safetensors") for k, v in env.items()}
    r = run_script(script, {**LAYOUT, **env, "EXPERIMENT_NAME": "run", "DATA_PATH": str(data),
                            "OUTPUT_ROOT": str(tmp / "ckpt")})
    assert r.returncode == 0, r.stderr[-3000:]
    launch = next(x for x in r.stdout.splitlines() if x.startswith("launch (node 1 of 4): "))
    assert launch.startswith("launch (node 1 of 4): " + TORCHRUN + f"--stage {stage} --profile paper ")
    assert f"--deepspeed {ROOT}/configs/deepspeed/zero2.json" in launch
    assert (f"per-device batch {per_device} x world size 32 x accumulation {accumulation} = global batch "
            f"{global_batch}") in r.stdout
    assert f"stage: {stage}" in r.stdout and "world_size: 32" in r.stdout and '"stage": 2' in r.stdout
    assert f"output: {tmp / 'ckpt' / 'run'}" in r.stdout and "resume: auto -> a fresh start" in r.stdout
    assert not (tmp / "ckpt").exists()  # nothing started, nothing written


def test_dry_run_refuses_a_layout_that_does_not_divide_the_global_batch(files):
    tmp, data, model = files
    r = run_script("uhdv1-finetune-qwen-stage2-sft.sh", {**LAYOUT, "NPROC_PER_NODE": "6", "EXPERIMENT_NAME": "run",
                                                          "DATA_PATH": str(data), "PREV_STAGE_CHECKPOINT": str(model),
                                                          "OUTPUT_ROOT": str(tmp / "ckpt")})
    assert r.returncode == 2 and "global batch 128 is not divisible" in r.stderr


@pytest.mark.parametrize("env, named", [
    ({"PREV_STAGE_CHECKPOINT": "{empty}"}, "--model-name-or-path {empty} has no config.json"),
    ({"PREV_STAGE_CHECKPOINT": "{model}", "RESUME": "{tmp}/checkpoint-7"},
     "--resume_from_checkpoint {tmp}/checkpoint-7 is not a complete checkpoint: no checkpoint_complete.json"),
])
def test_dry_run_stops_on_the_inputs_the_launch_would_stop_on(files, env, named):
    # a user checking a 4x8 launch learns of a wrong folder now, not after 32 ranks have started
    tmp, data, model = files
    (tmp / "empty").mkdir()
    (tmp / "checkpoint-7").mkdir()  # a save cut short: no completion marker
    fill = dict(model=model, tmp=tmp, empty=tmp / "empty")
    env = {k: v.format(**fill) for k, v in env.items()}
    r = run_script("uhdv1-finetune-qwen-stage2-sft.sh", {**LAYOUT, "EXPERIMENT_NAME": "run", "DATA_PATH": str(data),
                                                          "OUTPUT_ROOT": str(tmp / "ckpt"), **env})
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith("sicog train: error: " + named.format(**fill)), r.stderr
    assert "Traceback" not in r.stderr
    assert "launch (node 1 of 4): " in r.stdout and "--- batch ---" not in r.stdout
    assert not (tmp / "ckpt").exists()


def test_annotation_dry_run_prints_the_command(files):
    tmp, data, _ = files
    env = {k: v for k, v in os.environ.items() if k not in TRAIN_VARS}
    import subprocess

    r = subprocess.run(["bash", str(ROOT / "training_data_annotation" / "revise_cot.sh"), str(data),
                        str(tmp / "cot"), str(tmp / "short")], env={**env, "PYTHON": sys.executable, "DRY_RUN": "1"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == (f"launch (node 0 of 1): {sys.executable} -m sicog convert-cot --input {data} "
                                f"--output-cot-dir {tmp / 'cot'} --output-short-dir {tmp / 'short'}")
    assert not (tmp / "cot").exists()
