"""Training survives a SIGKILL during a checkpoint save: the rerun with `auto` resumes from the newest
complete checkpoint, logs each step once and ends with the weights of an uninterrupted run."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fault_inject import report_kills
from script_helpers import free_port
from train_fixtures import read_log, resume_world, train

FAULT = Path(__file__).with_name("fault_inject.py")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The in-process runs compute with one thread, as the killed subprocesses do (OMP_NUM_THREADS=1):
    a CPU matmul sums in a thread-count-dependent order, and Adam turns those last-bit differences in
    near-zero gradients (the resampler's key bias has a zero gradient by softmax shift invariance)
    into weight differences of ~1e-6. Equal weights are a property of resuming only at equal settings."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return resume_world(tmp_path_factory.mktemp("fault"))


def common(setup, out: Path) -> list[str]:
    model_dir, data = setup
    return ["train", "--stage", "stage2", "--model_name_or_path", str(model_dir), "--data_path", str(data),
            "--global_batch_size", "2", "--per_device_train_batch_size", "1", "--max_steps", "6",
            "--save_steps", "2", "--learning_rate", "1e-3", "--output_dir", str(out),
            "--resume_from_checkpoint", "auto"]


def run_killed(point: str, step: int, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, str(FAULT), point, str(step), *args], capture_output=True, text=True,
                          env=env, timeout=600)


def same_weights(a: Path, b: Path, name: str = "model.safetensors") -> bool:
    wa, wb = load_file(str(a / name)), load_file(str(b / name))
    return wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6) for k in wa)


def report_steps(stage: str, full_steps: list[int], steps: list[int], identical: bool) -> None:
    """The kill table's row: steps of the uninterrupted run missing from the resumed log, steps logged twice."""
    report_kills(stage, kills=1, resumed=1, lost=len(set(full_steps) - set(steps)),
                 duplicated=len(steps) - len(set(steps)), identical=identical)


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def full(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    assert train(*common(setup, out)[1:]) == 0
    return out


@pytest.mark.slow
@pytest.mark.parametrize("point", ["checkpoint-save", "checkpoint-publish"])
def test_kill_during_checkpoint_save_resumes_to_identical_weights(tmp_path, setup, full, point):
    out = tmp_path / "run"
    killed = run_killed(point, 4, common(setup, out))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # a kill leaves no half checkpoint under its final name
    assert not (out / "checkpoint-4").exists()
    assert (out / "checkpoint-2" / "checkpoint_complete.json").is_file()

    assert train(*common(setup, out)[1:]) == 0
    # killed mid-save, steps 3-4 are redone from checkpoint-2; killed after the marker, the staged
    # checkpoint-4 is complete and is published, and training continues from it
    losses = {x["step"]: x["loss"] for x in read_log(full) if "loss" in x}
    log = [x for x in read_log(out) if "loss" in x]
    report_steps(f"train (stage 2, {point})", sorted(losses), [x["step"] for x in log],
                 same_weights(full, out) and same_weights(full / "checkpoint-6", out / "checkpoint-6"))
    assert [x["step"] for x in log] == sorted(losses), "every step logged once"
    for x in log:
        assert x["loss"] == pytest.approx(losses[x["step"]], rel=1e-5, abs=1e-6)
    assert_same_weights(full, out)
    assert_same_weights(full / "checkpoint-6", out / "checkpoint-6")
    assert not (out / ".checkpoint-staging").exists()
    assert json.loads((out / "checkpoint-4" / "checkpoint_complete.json").read_text())["step"] == 4


@pytest.mark.slow
def test_auto_resume_skips_and_reports_an_incomplete_checkpoint(tmp_path, setup, full, caplog):
    """The issue's reproduction: a checkpoint-N holding only config.json (a save cut short)."""
    out = tmp_path / "run"
    shutil.copytree(full / "checkpoint-4", out / "checkpoint-4")  # what a kill after step 4 leaves
    (out / "checkpoint-9").mkdir()
    (out / "checkpoint-9" / "config.json").write_text((out / "checkpoint-4" / "config.json").read_text())
    args = common(setup, out)[1:]
    caplog.set_level("INFO")
    assert train(*args) == 0
    text = caplog.text
    assert "skipped" in text and "checkpoint-9" in text and "no checkpoint_complete.json" in text
    assert "continuing from" in text and "checkpoint-4" in text
    assert not (out / "checkpoint-9").exists()
    assert [p.name.split("-20")[0] for p in (out / "incomplete-checkpoints").iterdir()] == ["checkpoint-9"]
    assert [x["step"] for x in read_log(out) if "loss" in x] == [5, 6]
    assert_same_weights(full, out)


def test_explicit_resume_from_an_incomplete_checkpoint_is_refused(tmp_path, setup, capsys):
    out = tmp_path / "run"
    (out / "checkpoint-3").mkdir(parents=True)
    args = common(setup, out)[1:]
    args[-1] = str(out / "checkpoint-3")
    assert train(*args) == 2
    err = capsys.readouterr().err
    assert "--resume_from_checkpoint" in err and "not a complete checkpoint" in err and "Traceback" not in err


def torchrun(script: list[str], args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *script, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
def test_two_ranks_killed_during_a_checkpoint_save_resume_to_identical_weights(tmp_path):
    """Stage 1 (projector artefact checkpoints) on 2 ranks (gloo): both ranks die inside the save of
    checkpoint-4; the rerun resumes from checkpoint-2 and ends with the uninterrupted run's weights."""
    from train_fixtures import make_world, save_tiny_model

    model = save_tiny_model(tmp_path / "model")
    data = make_world(tmp_path / "world", n_image=12, n_text=0, sizes=((112, 112), (98, 126)))

    def args(out: Path) -> list[str]:
        return ["train", "--stage", "stage1", "--model_name_or_path", str(model), "--data_path", str(data),
                "--global_batch_size", "4", "--per_device_train_batch_size", "2", "--max_steps", "6",
                "--save_steps", "2", "--learning_rate", "1e-3", "--output_dir", str(out),
                "--resume_from_checkpoint", "auto"]

    full, out = tmp_path / "full", tmp_path / "run"
    r = torchrun(["-m", "sicog"], args(full))
    assert r.returncode == 0, r.stderr[-3000:]
    r = torchrun([str(FAULT), "checkpoint-save", "4"], args(out))
    assert r.returncode != 0 and not (out / "checkpoint-4").exists(), r.stderr[-3000:]
    assert (out / "checkpoint-2" / "checkpoint_complete.json").is_file()
    r = torchrun(["-m", "sicog"], args(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "continuing from" in r.stderr and "checkpoint-2" in r.stderr
    report_steps("train (stage 1, 2 ranks, checkpoint-save)", [1, 2, 3, 4, 5, 6],
                 [x["step"] for x in read_log(out) if "loss" in x], same_weights(full, out, "mm_projector.safetensors"))
    assert [x["step"] for x in read_log(out) if "loss" in x] == [1, 2, 3, 4, 5, 6]
    wa = load_file(str(full / "mm_projector.safetensors"))
    wb = load_file(str(out / "mm_projector.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
