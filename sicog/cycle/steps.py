"""Resumable steps of a long pipeline: each step owns a folder and is skipped once it finished.

A step runs a `sicog` subcommand in its own process (as a user would from the shell) or a Python
function, logs to `ROOT/steps/<step>.log`, and on success writes `ROOT/steps/<step>.done.json` with
its command and wall time (kept apart from the step's folder, which belongs to the command). A killed
pipeline rerun skips finished steps; a step killed half-way is run again from its own resume logic
(training, generation and evaluation all resume from their files).

On Linux a step's process is killed with the pipeline (PR_SET_PDEATHSIG): a `sicog reproduce` killed alone
(SIGKILL of its pid, the OOM killer) leaves no step running on behind it, holding the lock of an output
the rerun needs.

On Linux a `sicog` step is a fork of the pipeline process, which imported torch, transformers and the
step's command module once (it never computes with them, so no thread pool or CUDA context is
forked): a step then starts at once instead of spending 3-8 s importing in a fresh interpreter;
the 35-step micro plan ran in 120 s against 300 s (`benchmarks/bench_steps.py`). The child runs `sicog.cli.main` as `python -m sicog`
would, with its output in the step's log. SICOG_STEP_PROCESS=spawn (the default elsewhere) runs each
step in a fresh `python -m sicog` instead.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
import time
import traceback
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


def step_process() -> str:
    """How a `sicog` step runs: `fork` (Linux default) or `spawn` (a fresh interpreter), from SICOG_STEP_PROCESS."""
    mode = os.environ.get("SICOG_STEP_PROCESS") or ("fork" if sys.platform.startswith("linux") else "spawn")
    if mode not in ("fork", "spawn"):
        raise ValueError(f"SICOG_STEP_PROCESS={mode!r}: use fork or spawn")
    return mode


def _preload(command: str) -> bool:
    """Import what the step's process needs before it is forked; False when forking is unsafe (CUDA is
    initialised in this process: a forked child could not use it)."""
    import torch
    import transformers  # noqa: F401

    from sicog.cli import COMMANDS

    if torch.cuda.is_initialized():
        return False
    if command in COMMANDS:
        importlib.import_module(COMMANDS[command][0])
    return True


def _forked_step(args: list[str], log_path: Path, env: dict[str, str]) -> int:
    """Run `sicog ARGS` in a fork of this process with stdout and stderr appended to `log_path`; its exit code."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid:
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
    rc = 1
    try:  # the child: never returns into the pipeline's code
        preexec = _die_with_parent(parent)
        if preexec:
            preexec()
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", closefd=False)
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", closefd=False)
        logging.root.handlers.clear()   # the command's own logging setup writes to the new stderr
        os.environ.clear()
        os.environ.update(env)
        sys.argv = ["sicog", *args]
        from sicog.cli import main

        rc = main(args)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        rc = 1
    finally:
        try:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(rc if isinstance(rc, int) else 1)


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
        args = [str(a) for a in args]
        with self.log_file(name).open("a", encoding="utf-8") as out:
            out.write(f"\n$ sicog {' '.join(args)}\n")
        if step_process() == "fork" and _preload(args[0]):
            rc = _forked_step(args, self.log_file(name), self.env)
        else:
            with self.log_file(name).open("a", encoding="utf-8") as out:
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
