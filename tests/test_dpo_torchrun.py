"""Two `torchrun` ranks on CPU (DDP, gloo) take the same first DPO step as one process.

Global batch 4 as 2 ranks x 1 pair x 2 accumulation, against 1 process x 1 pair x 4
accumulation: the first step sees the same four pairs under the same weights, so the logged loss,
gradient norm and pair metrics agree, which checks the accumulation scaling, the cross-rank
reduction of the metrics and the exchange of precomputed reference log-probs.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from dpo_helpers import good_pairs, read_jsonl, write_pairs
from train_fixtures import save_tiny_model, train

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
KEYS = ("loss", "grad_norm", "logps/chosen", "logps/rejected", "sft_loss", "dpo_loss", "rewards/margins")


def dpo_args(model, data, out, *extra):
    return ["train", "--stage", "dpo", "--model_name_or_path", str(model), "--data_path", str(data),
            "--output_dir", str(out), "--global_batch_size", "4", "--per_device_train_batch_size", "1",
            "--max_steps", "1", "--peak_tflops", "1", "--save_strategy", "no", "--use_cpu", "true",
            "--dpo_precompute_ref", "true", *extra]


def test_two_torchrun_ranks_take_the_same_first_step_as_one_process(tmp_path):
    model = save_tiny_model(tmp_path / "model", seed=5)
    data = write_pairs(tmp_path / "pairs.jsonl", good_pairs(tmp_path, 4))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sicog", *dpo_args(model, data, tmp_path / "two")]
    run = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "4 per device" not in run.stderr and "1 per device x 2 ranks x 2 accumulation" in run.stderr

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train(*dpo_args(model, data, tmp_path / "one")[1:]) == 0
    finally:
        torch.set_num_threads(threads)

    two = [x for x in read_jsonl(tmp_path / "two" / "train_log.jsonl") if "loss" in x]
    one = [x for x in read_jsonl(tmp_path / "one" / "train_log.jsonl") if "loss" in x]
    assert len(two) == 1 and len(one) == 1  # one log line: only rank 0 writes
    assert two[0]["epoch"] == one[0]["epoch"] == 1.0
    for key in KEYS:
        assert two[0][key] == pytest.approx(one[0][key], rel=1e-4, abs=1e-5), key
    assert two[0]["dpo_loss"] == pytest.approx(0.693147, abs=1e-5)  # precomputed reference == starting policy
