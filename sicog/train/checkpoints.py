"""Checkpoints that are complete or absent: staged saves, a completion marker, and `auto` resume.

A checkpoint is written into `OUTPUT/.checkpoint-staging/checkpoint-N/`; when every rank has
finished writing, the main process lists every file with its size in `checkpoint_complete.json`
(written last, atomically) and renames the folder to `OUTPUT/checkpoint-N/`. A kill at any moment
therefore leaves either no `checkpoint-N/` or a complete one.

`resolve_resume("auto", OUTPUT)` takes the newest complete checkpoint. A `checkpoint-N/` without
the marker, or whose files differ from it (copied by hand, cut short by a full disk, written
before markers existed), is reported with the reason and moved to `OUTPUT/incomplete-checkpoints/`
so that nothing picks it up again and no hand edit is needed. A staged checkpoint that was complete
but not yet renamed when the run was killed is published; any other staging leftover is deleted.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

from sicog.data.checks import InputError
from sicog.data.records import atomic_write_text

log = logging.getLogger(__name__)

MARKER = "checkpoint_complete.json"
STAGING = ".checkpoint-staging"
INCOMPLETE = "incomplete-checkpoints"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MARKER}


def write_marker(folder: Path, step: int) -> None:
    """Record that `folder` is complete: its step and every file with its size."""
    atomic_write_text(folder / MARKER, json.dumps({"step": step, "files": _files(folder)}, indent=1) + "\n")


def incomplete_reason(folder: Path) -> str | None:
    """None for a complete checkpoint, else why it is not one."""
    marker = folder / MARKER
    if not marker.is_file():
        return f"no {MARKER} (its save was interrupted, or it was not written by a sicog run)"
    try:
        listed = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"unreadable {MARKER}"
    present = _files(folder)
    missing = sorted(set(listed) - set(present))
    if missing:
        return f"files missing since it was saved: {missing[:3]}"
    changed = sorted(k for k, size in listed.items() if present[k] != size)
    if changed:
        return f"files changed size since it was saved: {changed[:3]}"
    return None


def checkpoint_folders(output_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every `checkpoint-N` in output_dir, by step."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir() and (m := _CHECKPOINT_RE.match(p.name))]
    return sorted(found)


def publish(staged: Path, final: Path) -> None:
    """Rename a complete staged checkpoint to its final name, replacing an older folder of that name."""
    if final.exists():
        trash = staged.parent / f"replaced-{final.name}-{time.time_ns()}"
        os.replace(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(staged, final)


def recover_staging(output_dir: Path) -> None:
    """After a kill: publish staged checkpoints that were complete, delete every other leftover."""
    staging = output_dir / STAGING
    if not staging.is_dir():
        return
    for p in sorted(staging.iterdir()):
        if p.is_dir() and _CHECKPOINT_RE.match(p.name) and incomplete_reason(p) is None:
            log.info("publishing %s: complete, but the run was killed before renaming it", p.name)
            publish(p, output_dir / p.name)
        else:
            log.info("deleting %s: a checkpoint save cut short by a kill", p)
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)


def newest_complete(output_dir: Path, tidy: bool) -> Path | None:
    """The newest complete checkpoint in output_dir. With `tidy` (main process only) staging leftovers
    are recovered and incomplete checkpoints moved aside, each reported with its reason."""
    if tidy:
        recover_staging(output_dir)
    for step, folder in reversed(checkpoint_folders(output_dir)):
        reason = incomplete_reason(folder)
        if reason is None:
            return folder
        if tidy:
            aside = output_dir / INCOMPLETE / f"{folder.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            aside.parent.mkdir(exist_ok=True)
            os.replace(folder, aside)
            log.warning("resume auto: skipped %s: %s; moved to %s", folder, reason, aside)
    return None


def resolve_resume(value: str | None, output_dir: str, main: bool = True) -> str | None:
    """`auto`: the newest complete checkpoint in output_dir (None: a fresh start); a path must be complete."""
    if not value:
        return None
    if value == "auto":
        last = newest_complete(Path(output_dir), tidy=main)
        log.info("resume auto: %s", f"continuing from {last}" if last else "no complete checkpoint yet, starting fresh")
        return str(last) if last else None
    folder = Path(value)
    if not folder.is_dir():
        raise InputError(f"--resume_from_checkpoint {value}: no such checkpoint folder")
    reason = incomplete_reason(folder)
    if reason is not None:
        raise InputError(f"--resume_from_checkpoint {value} is not a complete checkpoint: {reason}; "
                         "use auto to take the newest complete one")
    return value
