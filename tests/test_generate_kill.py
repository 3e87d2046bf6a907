"""SIGKILL a running `sicog generate` at several points, rerun it: nothing lost, nothing duplicated, the
same candidates as an uninterrupted run."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fault_inject import report_kills
from generate_helpers import GOOD, SLOW, SUBPROCESS_ENV, gen_args, lines, merge, reference_run
from sicog.generate.shard import shard_path

FAULT = Path(__file__).with_name("fault_inject.py")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return reference_run(tmp_path_factory.mktemp("gendist"))


def test_sigkill_at_several_points_then_rerun_loses_and_duplicates_nothing(world, tmp_path):
    """Kill 1: from outside, once 2 records are on disk. Kill 2: deterministically, half-way through writing
    the 3rd record of the rerun (fault point append-torn). Then a rerun to the end."""
    model, data, ref = world
    out = tmp_path / "cands.jsonl"
    shard = shard_path(out, 0, 1)
    args = gen_args(model, data, out, *SLOW)
    cmd = [sys.executable, "-m", "sicog", *args]
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
    assert 2 <= done_at_kill < GOOD - 2

    killed = subprocess.run([sys.executable, str(FAULT), "append-torn", "2", *args],
                            env={**SUBPROCESS_ENV, "SICOG_TEST_KILL_FILE": shard.name}, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    text = shard.read_text()
    # A line torn by the first kill is cut when the rerun opens the shard; complete ones are kept.
    assert text.count("\n") in (done_at_kill + 2, done_at_kill + 3) and not text.endswith("\n")
    done_at_kill2 = text.count("\n")

    rerun = subprocess.run(cmd, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{done_at_kill2} already done" in rerun.stderr
    ids = [r["id"] for r in lines(shard)]
    result = merge(data, out)
    report_kills("generate", kills=2, resumed=2, lost=len(set(ref) - set(ids)), duplicated=len(ids) - len(set(ids)),
                 identical=result == ref)
    assert len(ids) == len(set(ids)) == GOOD
    assert result == ref
