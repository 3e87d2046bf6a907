"""SIGKILL a running `sicog generate`, rerun it: nothing lost, nothing duplicated, same candidates."""
import os
import signal
import subprocess
import sys
import time

import pytest

from generate_helpers import GOOD, gen_args, lines, make_inputs, merged, save_tiny_model
from sicog.cli import main
from sicog.generate.shard import shard_glob, shard_path

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SLOW = ("--batch-size", "1", "--max-new-tokens", "24", "--min-new-tokens", "24")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("gendist")
    model, data = save_tiny_model(root / "model"), make_inputs(root / "data")
    ref = root / "ref" / "cands.jsonl"
    assert main(gen_args(model, data, ref, *SLOW)) == 0
    assert main(["merge-candidates", "--inputs", str(data), "--shards", shard_glob(ref), "--out", str(ref)]) == 0
    return model, data, merged(ref)


def merge(data, out):
    assert main(["merge-candidates", "--inputs", str(data), "--shards", shard_glob(out), "--out", str(out)]) == 0
    return merged(out)


def test_sigkill_then_rerun_loses_and_duplicates_nothing(world, tmp_path):
    model, data, ref = world
    out = tmp_path / "cands.jsonl"
    shard = shard_path(out, 0, 1)
    cmd = [sys.executable, "-m", "sicog", *gen_args(model, data, out, *SLOW)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if shard.exists() and len(shard.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = len(lines(shard))
    assert 2 <= done_at_kill < GOOD
    rerun = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{done_at_kill} already done" in rerun.stderr or f"{done_at_kill + 1} already done" in rerun.stderr
    ids = [r["id"] for r in lines(shard)]
    assert len(ids) == len(set(ids)) == GOOD
    assert merge(data, out) == ref
