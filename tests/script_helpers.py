"""Shared by the shell-script tests: the training scripts, the variables they read, and a runner."""
import os
import socket
import subprocess
import sys
from pathlib import Path

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


def free_port() -> int:
    """A TCP port free on this host now, for a rendezvous (tests run in parallel, so never a fixed one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_script(name, env, *args):
    base = {k: v for k, v in os.environ.items() if k not in TRAIN_VARS}
    return subprocess.run(["bash", str(SCRIPTS / name), *args], env={**base, "PYTHON": sys.executable, **env},
                          cwd=env.get("_CWD", ROOT), capture_output=True, text=True, timeout=600)
