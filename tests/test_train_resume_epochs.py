"""Kill and resume in the second epoch: 2 epochs of 2 steps (4 samples a step, 2 batches accumulated)."""
import pytest

from train_fixtures import check_kill_and_resume, resume_world


@pytest.mark.slow
def test_kill_in_second_epoch_resumes_that_epochs_order(tmp_path):
    two_epochs = ["--num_train_epochs", "2", "--global_batch_size", "4", "--per_device_train_batch_size", "2"]
    check_kill_and_resume(tmp_path, resume_world(tmp_path / "world"), "stage2", "model.safetensors",
                          last=4, kill=3, extra=two_epochs)
