"""A run killed after a checkpoint resumes at the saved step with the same optimizer state and data order.

The killed run is the full run's checkpoint folder copied into a fresh output dir: what a kill
right after that checkpoint leaves behind. Resuming must reproduce the uninterrupted run exactly.
"""
import shutil

import pytest
import torch
from safetensors.torch import load_file

from test_train_fixtures import make_world, read_log, save_tiny_model, train


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    model_dir = save_tiny_model(root / "model")
    data = make_world(root / "world", n_image=6, n_text=2, sizes=((112, 112), (98, 126)))
    return model_dir, data


def _optimizer_state(ckpt):
    return torch.load(ckpt / "optimizer.pt", weights_only=True)["state"]


# stage 1 trains on the 6 image records (text-only ones cannot train the projector): 3 steps of 2;
# stage 2 on all 8 records: 4 steps; then 2 epochs of 2 steps (4 per step, accumulated over 2
# batches), killed in the second epoch, where the sampler must give that epoch's order again.
TWO_EPOCHS = ["--num_train_epochs", "2", "--global_batch_size", "4", "--per_device_train_batch_size", "2"]


@pytest.mark.slow
@pytest.mark.parametrize("stage, weights, last, kill, extra", [
    ("stage1", "mm_projector.safetensors", 3, 2, []),
    ("stage2", "model.safetensors", 4, 2, []),
    ("stage2", "model.safetensors", 4, 3, TWO_EPOCHS),
])
def test_kill_and_resume_matches_uninterrupted_run(tmp_path, setup, stage, weights, last, kill, extra):
    model_dir, data = setup
    common = ["--stage", stage, "--model_name_or_path", str(model_dir), "--data_path", str(data),
              "--global_batch_size", "2", "--per_device_train_batch_size", "1", "--save_steps", "1",
              "--save_total_limit", "10", "--learning_rate", "1e-3", *extra]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert train(*common, "--output_dir", str(full)) == 0
    assert (full / f"checkpoint-{kill}" / "train_config.yaml").is_file()  # the resolved config beside each checkpoint
    shutil.copytree(full / f"checkpoint-{kill}", killed / f"checkpoint-{kill}")
    assert train(*common, "--output_dir", str(killed), "--resume_from_checkpoint", "auto") == 0

    # continues at the saved step, with the same losses (same data order, same weights)
    full_log = {x["step"]: x["loss"] for x in read_log(full) if "loss" in x}
    resumed_log = {x["step"]: x["loss"] for x in read_log(killed) if "loss" in x}
    assert min(resumed_log) == kill + 1 and max(resumed_log) == max(full_log) == last
    for step, loss in resumed_log.items():
        assert loss == pytest.approx(full_log[step], rel=1e-5, abs=1e-6), step
    # identical optimizer state at the next checkpoint and identical final weights
    a, b = _optimizer_state(full / f"checkpoint-{last}"), _optimizer_state(killed / f"checkpoint-{last}")
    assert a.keys() == b.keys() and a
    for k in a:
        for name in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(a[k][name], b[k][name], rtol=1e-5, atol=1e-7)
    wa, wb = load_file(str(full / weights)), load_file(str(killed / weights))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
    # and it trained: the weights moved away from the starting model
    start = load_file(str(model_dir / "model.safetensors"))
    key = next(k for k in wa if not k.startswith("language_model")) if stage == "stage2" else None
    if stage == "stage1":
        assert any(not torch.equal(v, start["projector." + k]) for k, v in wa.items())
    else:
        assert not torch.equal(wa[key], start[key])
