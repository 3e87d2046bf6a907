"""A few DeepSpeed ZeRO-2 steps on CPU (DS_ACCELERATOR=cpu, one gloo process).

DeepSpeed's CPU backend would JIT-compile a shared-memory all-reduce kernel when it starts (a
minute or more on a small machine); `sicog train` skips that build on CPU (only inference uses the
kernel), and these runs check that ZeRO trains without it.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from script_helpers import free_port
from train_fixtures import make_world, save_tiny_model

ROOT = Path(__file__).resolve().parents[1]



@pytest.mark.slow
def test_zero2_steps_on_cpu(tmp_path):
    pytest.importorskip("deepspeed")
    model_dir = save_tiny_model(tmp_path / "model")
    data = make_world(tmp_path / "world", n_image=4, n_text=2, sizes=((112, 112),))
    out = tmp_path / "out"
    extensions = tmp_path / "torch_extensions"  # where a JIT-compiled kernel would go
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "TORCH_EXTENSIONS_DIR": str(extensions)}
    cmd = [sys.executable, "-m", "sicog", "train", "--stage", "stage2", "--model_name_or_path", str(model_dir),
           "--data_path", str(data), "--output_dir", str(out), "--global_batch_size", "2",
           "--per_device_train_batch_size", "1", "--max_steps", "2", "--warmup_steps", "0",
           "--deepspeed", str(ROOT / "configs" / "deepspeed" / "zero2.json")]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "inference all-reduce kernel is not built" in proc.stderr
    assert not list(extensions.glob("*shm*"))  # nothing compiled
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in log if "loss" in x]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(v)) for v in losses)
    assert (out / "checkpoint-2").is_dir()
    trained, start = load_file(str(out / "model.safetensors")), load_file(str(model_dir / "model.safetensors"))
    key = "projector.query" if "projector.query" in start else next(k for k in start if k.startswith("projector."))
    assert set(start) <= set(trained)  # DeepSpeed's gathered dict may also name the tied lm_head
    assert not torch.equal(trained[key].float(), start[key].float())
    from sicog.model import SicogForConditionalGeneration

    from sicog.model.modeling import model_key

    reloaded = SicogForConditionalGeneration.from_pretrained(out)
    torch.testing.assert_close(reloaded.state_dict()[model_key(key)].float(), trained[key].float())


@pytest.mark.slow
def test_zero3_loads_and_saves_whole_weights(tmp_path):
    """Under ZeRO-3 the projector artefact is gathered before loading and saving, and so is the final model.

    One step at learning rate 0 (the first warm-up step) must hand back exactly what went in.
    """
    pytest.importorskip("deepspeed")
    from tiny_models import build_random_tiny
    from sicog.train.artefacts import save_projector_artefact

    model_dir = save_tiny_model(tmp_path / "model")
    data = make_world(tmp_path / "world", n_image=2, n_text=0, sizes=((112, 112),))
    donor, _ = build_random_tiny(seed=5)
    proj = {k: v.clone() for k, v in donor.projector.state_dict().items()}
    save_projector_artefact(proj, tmp_path / "proj", {"base_model": str(model_dir)})
    port = free_port()
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    zero3 = str(ROOT / "configs" / "deepspeed" / "zero3.json")
    common = ["--data_path", str(data), "--global_batch_size", "2", "--per_device_train_batch_size", "2",
              "--max_steps", "1", "--deepspeed", zero3]

    out15 = tmp_path / "stage1_5"
    cmd = [sys.executable, "-m", "sicog", "train", "--stage", "stage1_5", "--mm_projector_checkpoint",
           str(tmp_path / "proj"), "--output_dir", str(out15), *common]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    n_proj = sum(p.numel() for p in donor.projector.parameters())
    assert re.search(rf"projector\s+{n_proj:,} parameters", proc.stderr)  # full sizes, not empty partitions
    saved = load_file(str(out15 / "model.safetensors"))
    for k, v in proj.items():
        torch.testing.assert_close(saved["projector." + k], v, rtol=0, atol=0)

    out1 = tmp_path / "stage1"
    cmd = [sys.executable, "-m", "sicog", "train", "--stage", "stage1", "--model_name_or_path", str(model_dir),
           "--output_dir", str(out1), *common]
    proc = subprocess.run(cmd, env={**env, "MASTER_PORT": str(free_port())}, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    artefact = load_file(str(out1 / "mm_projector.safetensors"))
    start = load_file(str(model_dir / "model.safetensors"))
    assert artefact.keys() == {k[len("projector."):] for k in start if k.startswith("projector.")}
    for k, v in artefact.items():
        assert v.numel() > 0
        torch.testing.assert_close(v, start["projector." + k], rtol=0, atol=0)
