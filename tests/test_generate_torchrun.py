"""Two `torchrun` ranks on CPU give the same ids and candidates as one process."""
import subprocess
import sys

import pytest

from generate_helpers import SLOW, SUBPROCESS_ENV, gen_args, lines, merge, reference_run
from sicog.generate.shard import rejects_path, shard_path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return reference_run(tmp_path_factory.mktemp("gendist"))


def test_two_torchrun_ranks_equal_one_process(world, tmp_path):
    model, data, ref = world
    out = tmp_path / "cands.jsonl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sicog", *gen_args(model, data, out, *SLOW)]
    run = subprocess.run(cmd, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    per_rank = [lines(shard_path(out, r, 2)) for r in range(2)]
    assert all(per_rank) and not shard_path(out, 0, 1).exists()
    rejected = [lines(rejects_path(shard_path(out, r, 2))) for r in range(2)]
    assert sum(map(len, rejected)) == 4  # missing, corrupt, no question, no image; the duplicate is merge's
    assert merge(data, out) == ref
