"""Resumable steps of a long pipeline: each step owns a folder and is skipped once it finished.

A step runs a `sicog` subcommand in its own process (as a user would from the shell) or a Python
function, logs to `ROOT/steps/<step>.log`, and on success writes `ROOT/steps/<step>.done.json` with
its command and wall time (kept apart from the step's folder, which belongs to the command). A killed
pipeline rerun skips finished steps; a step killed half-way is run again from its own resume logic
(training, generation and evaluation all resume from their files).

On Linux a step's process is killed with the pipeline (PR_SET_PDEATHSIG): a `sicog reproduce` killed alone
(SIGKILL of its pid, the OOM killer) leaves no step running on behind it, holding the lock of an output
the rerun needs.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from sicog.data.records import write_json

log = logging.getLogger(__name__)

STEPS = "steps"


class StepFailed(RuntimeError):
    def __init__(self, name: str, rc: int, log_path: Path):
        tail = ""
        if log_path.exists():
            tail = "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-25:])
        super().__init__(f"step {name} failed with exit code {rc}; last lines of {log_path}:\n{tail}")
        self.name, self.rc, self.log_path = name, rc, log_path


class MissingOutput(RuntimeError):
    """A finished step's output is not where the step wrote it (the run folder was changed since)."""

    def __init__(self, step: str, path: Path):
        super().__init__(f"step {step}: its output {path} is missing; rerun `sicog reproduce` to run the step "
                         f"again (first delete its marker OUT/{STEPS}/{step}.done.json if it is there: a step with "
                         "a marker counts as finished and is skipped)")
        self.step, self.path = step, path


def walltimes(root: str | Path) -> dict[str, float]:
    """Wall time of every finished step under run folder `root`, by step name (read from the markers)."""
    out = {}
    for marker in sorted((Path(root) / STEPS).rglob("*.done.json")):
        info = json.loads(marker.read_text())
        out[info["step"]] = info["wall_s"]
    return out


def _die_with_parent(parent: int):
    """A `preexec_fn` (Linux): the step gets SIGKILL when the pipeline process that started it dies."""
    if not sys.platform.startswith("linux"):
        return None

    def preexec() -> None:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the pipeline died before the call above
            os._exit(1)

    return preexec


class StepRunner:
    def __init__(self, root: str | Path, env: dict[str, str] | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **(env or {})}
        self.requested: list[str] = []   # every step asked for in this process, in order, run or skipped

    def folder(self, name: str) -> Path:
        return self.root / name

    def marker(self, name: str) -> Path:
        return self.root / STEPS / f"{name}.done.json"

    def log_file(self, name: str) -> Path:
        path = self.root / STEPS / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def done(self, name: str) -> bool:
        return self.marker(name).exists()

    def _finish(self, name: str, started: float, what: list[str] | str) -> None:
        wall = time.time() - started
        write_json(self.marker(name), {"step": name, "command": what, "wall_s": round(wall, 2)})
        log.info("step %-40s done in %7.1fs", name, wall)

    def sicog(self, name: str, args: list[str]) -> Path:
        """Run `python -m sicog ARGS` for step `name` unless it already finished; returns its folder."""
        folder = self.folder(name)
        self.requested.append(name)
        if self.done(name):
            log.info("step %-40s already done, skipped", name)
            return folder
        argv = [sys.executable, "-m", "sicog", *map(str, args)]
        log.info("step %-40s running: sicog %s", name, " ".join(map(str, args)))
        started = time.time()
        with self.log_file(name).open("a", encoding="utf-8") as out:
            out.write(f"\n$ sicog {' '.join(map(str, args))}\n")
            out.flush()
            rc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                preexec_fn=_die_with_parent(os.getpid())).returncode
        if rc != 0:
            raise StepFailed(name, rc, self.log_file(name))
        self._finish(name, started, ["sicog", *map(str, args)])
        return folder

    def python(self, name: str, fn: Callable[[Path], None], what: str) -> Path:
        """Run `fn(folder)` for step `name` unless it already finished; returns its folder."""
        folder = self.folder(name)
        self.requested.append(name)
        if self.done(name):
            log.info("step %-40s already done, skipped", name)
            return folder
        folder.mkdir(parents=True, exist_ok=True)
        started = time.time()
        fn(folder)
        self._finish(name, started, what)
        return folder
