"""Two `torchrun` ranks on CPU give the same ids and candidates as one process."""
import os
import subprocess
import sys

import pytest

from generate_helpers import gen_args, lines, make_inputs, merged, save_tiny_model
from sicog.cli import main
from sicog.generate.shard import rejects_path, shard_glob, shard_path

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


def test_two_torchrun_ranks_equal_one_process(world, tmp_path):
    model, data, ref = world
    out = tmp_path / "cands.jsonl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sicog", *gen_args(model, data, out, *SLOW)]
    run = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    per_rank = [lines(shard_path(out, r, 2)) for r in range(2)]
    assert all(per_rank) and not shard_path(out, 0, 1).exists()
    rejected = [lines(rejects_path(shard_path(out, r, 2))) for r in range(2)]
    assert sum(map(len, rejected)) == 4  # missing, corrupt, no question, no image; the duplicate is merge's
    assert merge(data, out) == ref
