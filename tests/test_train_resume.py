"""A run killed after a checkpoint resumes at the saved step with the same optimizer state and data order.

The killed run is the full run's checkpoint folder copied into a fresh output dir: what a kill
right after that checkpoint leaves behind. Resuming must reproduce the uninterrupted run exactly.
"""
import pytest

from train_fixtures import check_kill_and_resume, resume_world


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return resume_world(tmp_path_factory.mktemp("resume"))


# stage 1 trains on the 6 image records (text-only ones cannot train the projector): 3 steps of 2;
# stage 2 on all 8 records: 4 steps.
@pytest.mark.slow
@pytest.mark.parametrize("stage, weights, last", [("stage1", "mm_projector.safetensors", 3),
                                                  ("stage2", "model.safetensors", 4)])
def test_kill_and_resume_matches_uninterrupted_run(tmp_path, setup, stage, weights, last):
    check_kill_and_resume(tmp_path, setup, stage, weights, last, kill=2, extra=[])
