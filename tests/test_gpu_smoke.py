"""benchmarks/gpu_smoke.py runs as a user would run it: without CUDA it skips with a clear line and
exit status 0; `--cpu-tiny` runs the tiny tier's forward, backward and generation on CPU."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_smoke.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the script would run, not skip")
def test_without_cuda_it_skips_with_status_0():
    r = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "no CUDA device: skipped"


def test_cpu_tiny_mode_trains_and_generates():
    r = subprocess.run([sys.executable, str(SCRIPT), "--cpu-tiny", "--iters", "1", "--batch", "2",
                        "--new-tokens", "4"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "device: CPU, dtype: float32, attention: sdpa"
    assert "train tok/s" in lines[1] and "generate tok/s" in lines[1]
    row = lines[2].split()
    assert row[0] == "tiny" and float(row[3]) > 0  # a finite loss
