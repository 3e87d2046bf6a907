"""A DPO run stopped after a checkpoint and resumed (`--resume_from_checkpoint auto`) ends where an
uninterrupted run ends: same steps, same log values, same weights."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from dpo_helpers import good_pairs, read_jsonl, write_pairs
from train_fixtures import save_tiny_model, train


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def args(model, data, out, steps, *extra):
    return ("--stage", "dpo", "--model_name_or_path", str(model), "--data_path", str(data), "--output_dir", str(out),
            "--global_batch_size", "2", "--per_device_train_batch_size", "2", "--max_steps", str(steps),
            "--learning_rate", "1e-3", "--lr_scheduler_type", "constant", "--warmup_ratio", "0",
            "--peak_tflops", "1", "--save_strategy", "steps", "--save_steps", "2", *extra)


def test_resumed_dpo_run_matches_an_uninterrupted_one(tmp_path):
    model = save_tiny_model(tmp_path / "model", seed=6)
    data = write_pairs(tmp_path / "pairs.jsonl", good_pairs(tmp_path, 4))
    assert train(*args(model, data, tmp_path / "full", 4)) == 0
    assert train(*args(model, data, tmp_path / "cut", 2)) == 0  # stops after the step-2 checkpoint
    assert (tmp_path / "cut" / "checkpoint-2").is_dir()
    assert train(*args(model, data, tmp_path / "cut", 4, "--resume_from_checkpoint", "auto")) == 0

    full = {x["step"]: x for x in read_jsonl(tmp_path / "full" / "train_log.jsonl") if "loss" in x}
    cut = {x["step"]: x for x in read_jsonl(tmp_path / "cut" / "train_log.jsonl") if "loss" in x}
    assert sorted(full) == sorted(cut) == [1, 2, 3, 4]
    for step in (3, 4):
        for key in ("loss", "rewards/margins", "rewards/chosen", "sft_loss"):
            assert cut[step][key] == pytest.approx(full[step][key], rel=1e-4, abs=1e-6), (step, key)
    assert full[4]["rewards/margins"] != 0.0  # the resumed steps are measured against the starting model
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
