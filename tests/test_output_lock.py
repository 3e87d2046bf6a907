"""One writer per output: a second run on an output another live run holds stops and names the holder;
the lock of a run that is gone (killed) is taken over, so a rerun resumes without a hand edit."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from cli_helpers import sicog
from train_fixtures import make_world, save_tiny_model


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    root = tmp_path_factory.mktemp("lock")
    model = save_tiny_model(root / "model")
    data = make_world(root / "world", n_image=2, n_text=0, sizes=((112, 112),))
    (root / "world" / "world.jsonl").write_text("{}\n")
    cands = [{"id": f"c{i}", "candidates": ["a", "a"]} for i in range(2)]
    (root / "cands.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cands))
    # What the world commands and build-model check before they take the lock (the lock refuses before
    # anything is read): a world's files, a CLIP folder and a Qwen2 folder.
    for name in ("world.jsonl", "data/clip_pretrain.jsonl", "data/lm_text.txt", "data/lm_chat.jsonl",
                 "data/eval/qa.jsonl", "data/eval/pope.jsonl", "tokenizer/tokenizer.json"):
        (root / "pw" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "pw" / name).write_text("{}\n")
    # a single question and an easy one: what the easy and focus parts' checks ask of a world
    (root / "pw" / "data/lm_chat.jsonl").write_text('{"skills": ["existence"]}\n'
                                                    '{"skills": ["existence-colour"], "part": "easy"}\n')
    for name, model_type in (("clip", "clip_vision_model"), ("llm", "qwen2")):
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps({"model_type": model_type}))
        for f in ("model.safetensors", "tokenizer_config.json"):
            (root / name / f).write_text("{}")
    return root, model, data


def hold(lock, pid: int) -> None:
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "started": time.time(),
                                "command": "sicog the-first-run"}) + "\n")


def _commands(root, model, data):
    images = str(data.parent)
    return {
        "generate": (["generate", "--model", str(model), "--data", str(data), "--image-folder", images,
                      "--out", f"{root}/gen/c.jsonl"], root / "gen" / "c.jsonl.rank0.lock"),
        "evaluate": (["evaluate", "--model", str(model), "--world", images, "--out", f"{root}/ev"],
                     root / "ev" / ".sicog.lock"),
        "curate": (["curate", "--method", "vote", "--candidates", str(root / "cands.jsonl"), "--out",
                    f"{root}/cu"], root / "cu" / ".sicog.lock"),
        "annotate-cod": (["annotate-cod", "--input", str(data), "--image-folder", images, "--output-cod-dir",
                          f"{root}/cod", "--output-dd-dir", f"{root}/dd", "--base-url", "http://127.0.0.1:9/v1"],
                         root / "cod" / ".sicog.lock"),
        "convert-cot": (["convert-cot", "--input", str(data), "--output-cot-dir", f"{root}/cot",
                         "--output-short-dir", f"{root}/short"], root / "short" / ".sicog.lock"),
        "merge-candidates": (["merge-candidates", "--inputs", str(data), "--shards", f"{root}/gen/c.jsonl.rank*",
                              "--out", f"{root}/merged.jsonl"], root / "merged.jsonl.lock"),
        "train": (["train", "--stage", "stage2", "--model-name-or-path", str(model), "--data-path", str(data),
                   "--global-batch-size", "2", "--per_device_train_batch_size", "1", "--output_dir", f"{root}/tr"],
                  root / "tr" / ".sicog.lock"),
        "reproduce": (["reproduce", "--out", f"{root}/rep", "--size", "micro"], root / "rep" / ".sicog.lock"),
        "build-preferences": (["build-preferences", "--source", "curation", "--pairs", str(root / "cands.jsonl"),
                               "--out", f"{root}/prefs/pairs.jsonl"], root / "prefs" / "pairs.jsonl.lock"),
        "world build": (["world", "build", "--out", f"{root}/wb", "--size", "micro"], root / "wb.lock"),
        "world pretrain": (["world", "pretrain", "--world", str(root / "pw"), "--out", f"{root}/pt"],
                           root / "pt" / ".sicog.lock"),
        "world export-vlmeval": (["world", "export-vlmeval", "--world", str(root / "pw"), "--out", f"{root}/lmu"],
                                 root / "lmu" / ".sicog.lock"),
        "build-model": (["build-model", "--vision", str(root / "clip"), "--llm", str(root / "llm"), "--out",
                         f"{root}/bm"], root / "bm" / ".sicog.lock"),
        "import-checkpoint": (["import-checkpoint", "--from", "authors", "--in", str(root / "llm"), "--out",
                               f"{root}/ic"], root / "ic" / ".sicog.lock"),
    }


@pytest.mark.parametrize("command", ["generate", "evaluate", "curate", "annotate-cod", "convert-cot",
                                     "merge-candidates", "train", "reproduce", "build-preferences", "world build",
                                     "world pretrain", "world export-vlmeval", "build-model", "import-checkpoint"])
def test_second_run_on_a_held_output_stops_naming_the_holder(w, command, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    argv, lock = _commands(*w)[command]
    hold(lock, os.getpid())  # a live process on this host: the first run
    try:
        rc, err = sicog(*argv)
    finally:
        before = lock.read_text()
        lock.unlink()
    assert rc == 2, err
    assert "is being written by another run" in err and f"pid {os.getpid()}" in err and "the-first-run" in err
    assert "Traceback" not in err
    assert json.loads(before)["command"] == "sicog the-first-run"  # the holder's lock is left alone


def test_stale_lock_of_a_killed_run_is_taken_over_and_released(w, tmp_path, caplog):
    root, model, data = w
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid no longer runs
    lock = tmp_path / "cot" / ".sicog.lock"
    hold(lock, gone.pid)
    caplog.set_level("WARNING")
    rc, err = sicog("convert-cot", "--input", str(data), "--output-cot-dir", str(tmp_path / "cot"),
                    "--output-short-dir", str(tmp_path / "cot"))
    assert rc == 1  # these records have no tagged answers: all rejected, and that is a failure
    assert "stale lock" in caplog.text and f"pid {gone.pid}" in caplog.text
    assert not lock.exists(), "released at the end"
    assert len((tmp_path / "cot" / "cot_rejects.jsonl").read_text().splitlines()) == 2


def test_two_concurrent_generate_runs_on_one_output(w, tmp_path):
    """Real processes: while a first generate holds --out (paused before its first batch), a second one
    on the same --out stops naming it; the first then writes every id once."""
    root, model, data = w
    release = tmp_path / "release"
    common = ["generate", "--model", str(model), "--data", str(data), "--image-folder", str(data.parent),
              "--out", str(tmp_path / "c.jsonl"), "--num-candidates", "2", "--max-new-tokens", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "SICOG_TEST_RELEASE": str(release)}
    fault = os.path.join(os.path.dirname(__file__), "fault_inject.py")
    first = subprocess.Popen([sys.executable, fault, "generate-pause", "0", *common], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "c.jsonl.rank0.lock"
    deadline = time.time() + 300
    while not lock.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert lock.exists(), "the first run holds the lock"
    second = subprocess.run([sys.executable, "-m", "sicog", *common], env=env, capture_output=True, text=True,
                            timeout=300)
    release.touch()
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"pid {first.pid}" in second.stderr and "is being written by another run" in second.stderr
    assert "Traceback" not in second.stderr
    lines = (tmp_path / "c.jsonl.rank0-of-1.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["id"] for x in lines) == ["img0", "img1"], "each id written once"
    assert not lock.exists()
