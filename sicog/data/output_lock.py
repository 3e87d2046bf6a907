"""One writer per output: an exclusive lock file beside (or inside) what a command writes.

`OutputLock(target, arg)` creates the lock file with O_CREAT | O_EXCL and writes its holder into it:
host, pid, command line and start time. A second command on the same output finds the file and
stops with an `InputError` naming the holder. A lock whose holder is gone (same host, pid no longer
running: a run killed with SIGKILL) is stale: it is taken over with a warning, so that the rerun
that resumes a killed run needs no hand edit. A lock held from another host cannot be checked from
here; the message says which file to delete once that run is known to be gone.

The lock of a folder output is `<folder>/.sicog.lock`; that of a file output is `<file>.lock`.
Ranks of one `torchrun` job that write separate files lock them separately (`suffix`).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from sicog.data.checks import InputError

log = logging.getLogger(__name__)

LOCK_NAME = ".sicog.lock"


def lock_path(target: str | os.PathLike, folder: bool, suffix: str = "") -> Path:
    p = Path(target)
    return p / f"{LOCK_NAME[:-5]}{suffix}.lock" if folder else p.with_name(f"{p.name}{suffix}.lock")


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _holder_text(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} (since {when}: {holder.get('command', '?')})"


class OutputLock:
    """Context manager holding the lock on `target` (a folder when `folder`, else a file)."""

    def __init__(self, target: str | os.PathLike, arg: str, folder: bool = True, suffix: str = ""):
        self.target = Path(target)
        self.arg = arg
        self.path = lock_path(target, folder, suffix)
        self.held = False
        self.holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
                       "command": " ".join(["sicog", *sys.argv[1:]])[:300]}

    def acquire(self) -> "OutputLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._refuse_or_clear()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(self.holder) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return self
        raise InputError(f"{self.arg} {self.target}: could not take the lock {self.path}")

    def _refuse_or_clear(self) -> None:
        """Raise naming a live holder; remove a stale lock (its holder is gone) and return."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return  # released meanwhile
        try:
            holder = json.loads(text)
        except json.JSONDecodeError:
            holder = None
        if not isinstance(holder, dict):
            # a holder killed between creating the file and writing it: stale once it is not brand new
            if time.time() - self.path.stat().st_mtime < 10:
                time.sleep(1)
                return
            holder = {}
        same_host = holder.get("host") == self.holder["host"]
        pid = holder.get("pid")
        if holder and not (same_host and isinstance(pid, int) and not _pid_running(pid)):
            where = "" if same_host else " (another host: it cannot be checked from here)"
            raise InputError(
                f"{self.arg} {self.target} is being written by another run: {_holder_text(holder)}{where}. "
                f"Wait for it to finish, use another {self.arg}, or delete {self.path} if that run is gone")
        log.warning("taking over the stale lock %s: its holder (%s) is no longer running",
                    self.path, _holder_text(holder) if holder else "unknown")
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            current = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return
        if current.get("pid") == self.holder["pid"] and current.get("host") == self.holder["host"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
