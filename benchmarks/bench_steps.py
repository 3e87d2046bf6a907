"""Wall time of the micro plan (`sicog reproduce --size micro`, about 35 steps) with its steps forked
from the pipeline process (SICOG_STEP_PROCESS=fork, the Linux default) and in fresh interpreters
(spawn), side by side: the runs alternate, each into a fresh folder, and the two tables must agree.

    python benchmarks/bench_steps.py               # one run of each (about 7 minutes on 2 cores)
    python benchmarks/bench_steps.py --repeats 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from sicog.model.precision import machine_line


def run(mode: str, out: Path, threads: str) -> tuple[float, float, str]:
    """(wall s of the whole run, sum of the steps' own wall s, results.csv) of one micro reproduction."""
    env = {**os.environ, "SICOG_STEP_PROCESS": mode, "OMP_NUM_THREADS": threads, "TQDM_DISABLE": "1"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sicog", "reproduce", "--out", str(out), "--size", "micro"],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"{mode} run failed:\n{done.stderr[-3000:]}")
    steps = sum(json.loads(m.read_text())["wall_s"] for m in (out / "steps").rglob("*.done.json"))
    return wall, steps, (out / "results.csv").read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(threads))
    print(f"torch {torch.__version__}; {machine_line()}; OMP_NUM_THREADS={threads} in each run")
    walls: dict[str, list[float]] = {"fork": [], "spawn": []}
    tables = set()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for mode in ("fork", "spawn") if i % 2 == 0 else ("spawn", "fork"):
                wall, steps, table = run(mode, Path(tmp) / f"{mode}-{i}", threads)
                walls[mode].append(wall)
                tables.add(table)
                print(f"  run {i} {mode:5s}: {wall:6.1f} s in all, {steps:6.1f} s inside its steps")
    fork, spawn = statistics.median(walls["fork"]), statistics.median(walls["spawn"])
    print(f"micro plan, median of {args.repeats}: fork {fork:.1f} s, spawn {spawn:.1f} s: "
          f"spawn / fork = {spawn / fork:.2f}x")
    print("results tables: " + ("identical" if len(tables) == 1 else f"{len(tables)} DIFFERENT tables"))
    if len(tables) != 1:
        sys.exit(1)


if __name__ == "__main__":
    main()
