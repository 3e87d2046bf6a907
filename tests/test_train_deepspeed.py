"""A few DeepSpeed ZeRO-2 steps on CPU (DS_ACCELERATOR=cpu, one gloo process).

DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce kernel on first use (minutes on a
small machine); with a single process it is never used, so the run here skips building it.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_train_fixtures import make_world, save_tiny_model

ROOT = Path(__file__).resolve().parents[1]
RUNNER = (
    "import sys, deepspeed.comm.torch as t; t.build_shm_op = lambda: None; "
    "from sicog.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_zero2_steps_on_cpu(tmp_path):
    pytest.importorskip("deepspeed")
    model_dir = save_tiny_model(tmp_path / "model")
    data = make_world(tmp_path / "world", n_image=4, n_text=2, sizes=((112, 112),))
    out = tmp_path / "out"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    cmd = [sys.executable, "-c", RUNNER, "train", "--stage", "stage2", "--model_name_or_path", str(model_dir),
           "--data_path", str(data), "--output_dir", str(out), "--global_batch_size", "2",
           "--per_device_train_batch_size", "1", "--max_steps", "2", "--warmup_steps", "0",
           "--deepspeed", str(ROOT / "configs" / "deepspeed" / "zero2.json")]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in log if "loss" in x]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(v)) for v in losses)
    assert (out / "checkpoint-2").is_dir()
    trained, start = load_file(str(out / "model.safetensors")), load_file(str(model_dir / "model.safetensors"))
    key = "projector.query" if "projector.query" in start else next(k for k in start if k.startswith("projector."))
    assert set(start) <= set(trained)  # DeepSpeed's gathered dict may also name the tied lm_head
    assert not torch.equal(trained[key].float(), start[key].float())
    from sicog.model import SicogForConditionalGeneration

    reloaded = SicogForConditionalGeneration.from_pretrained(out)
    torch.testing.assert_close(reloaded.state_dict()[key].float(), trained[key].float())
