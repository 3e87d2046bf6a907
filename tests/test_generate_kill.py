"""SIGKILL a running `sicog generate`, rerun it: nothing lost, nothing duplicated, same candidates."""
import signal
import subprocess
import sys
import time

import pytest

from generate_helpers import GOOD, SLOW, SUBPROCESS_ENV, gen_args, lines, merge, reference_run
from sicog.generate.shard import shard_path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return reference_run(tmp_path_factory.mktemp("gendist"))


def test_sigkill_then_rerun_loses_and_duplicates_nothing(world, tmp_path):
    model, data, ref = world
    out = tmp_path / "cands.jsonl"
    shard = shard_path(out, 0, 1)
    cmd = [sys.executable, "-m", "sicog", *gen_args(model, data, out, *SLOW)]
    proc = subprocess.Popen(cmd, env=SUBPROCESS_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    rerun = subprocess.run(cmd, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{done_at_kill} already done" in rerun.stderr or f"{done_at_kill + 1} already done" in rerun.stderr
    ids = [r["id"] for r in lines(shard)]
    assert len(ids) == len(set(ids)) == GOOD
    assert merge(data, out) == ref
