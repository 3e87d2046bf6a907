"""Session-wide test settings.

The suite pins fp32 compute (SICOG_PRECISION=fp32) so that every test's numbers do not depend on
whether this CPU has native bf16; tests of the bf16 path (tests/test_precision.py) ask for it
explicitly. Under pytest-xdist (`make test` runs one worker per core) each worker and the
processes it starts compute with its share of the cores, so that workers do not oversubscribe them.
The record-check cache of `sicog train` goes to a folder of this session, not the
user's `~/.cache/sicog`. Helper modules that check results with `assert` get pytest's assertion
messages too.
"""
import os
import tempfile

import pytest

pytest.register_assert_rewrite("train_fixtures", "generate_helpers", "annotate_helpers")
os.environ["SICOG_PRECISION"] = "fp32"
os.environ.setdefault("SICOG_CACHE_DIR", tempfile.mkdtemp(prefix="sicog-test-cache-"))
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    threads = max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
