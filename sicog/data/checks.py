"""Bad-input errors, the path checks every command makes before it starts work, and its flags' aliases.

An `InputError` is a problem with what the user gave (a path, a value, a file's content), not a bug:
`sicog` prints it as one line naming the argument and exits with status 2 (`sicog --debug ...`
shows the traceback as well). Each check names the argument it was given for.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path


class InputError(ValueError):
    """A bad input, reported to the user as one line (no traceback)."""


def add_flag(parser, flag: str, *aliases: str, **kwargs) -> argparse.Action:
    """`parser.add_argument(flag, **kwargs)`; each of `aliases`, an older spelling that scripts may still
    pass, sets the same value and is not listed by `--help`.

    Every subcommand's own flags are spelled with dashes (`--image-folder`). A required flag cannot
    take an alias here (argparse would still ask for `flag`): make it optional and check it in `run`.
    """
    if aliases and kwargs.get("required"):
        raise ValueError(f"{flag}: a required flag cannot have hidden aliases")
    action = parser.add_argument(flag, **kwargs)
    if aliases:
        same = {k: v for k, v in kwargs.items() if k not in ("help", "default", "metavar", "dest")}
        parser.add_argument(*aliases, dest=action.dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **same)
    return action


def check_input_file(path: str | os.PathLike, arg: str) -> Path:
    """An existing regular file; InputError naming `arg` when it is missing or a folder."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{arg} {p} is a folder; give a file")
    if not p.is_file():
        raise InputError(f"{arg} {p}: no such file")
    return p


def check_input_dir(path: str | os.PathLike, arg: str, what: str = "a folder") -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{arg} {p}: no such folder ({what})")
    if not p.is_dir():
        raise InputError(f"{arg} {p} is a file; give {what}")
    return p


def check_world(path: str | os.PathLike, arg: str) -> Path:
    """A built mini world (a folder with world.jsonl)."""
    p = check_input_dir(path, arg, "a built world")
    if not (p / "world.jsonl").is_file():
        raise InputError(f"{arg} {p} is not a built world (no world.jsonl); build one with `sicog world build`")
    return p


def _check_parents(p: Path, arg: str) -> None:
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{arg} {p}: {parent} is a file, so nothing can be written below it")
            return


def check_output_dir(path: str | os.PathLike, arg: str, create: bool = True) -> Path:
    """A folder to write into (created when `create`); InputError when it, or a parent, is a file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{arg} {p} is an existing file; give a folder (it holds several outputs)")
    _check_parents(p, arg)
    if create:
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"{arg} {p}: cannot create the folder ({e.strerror})") from None
    return p


def check_output_file(path: str | os.PathLike, arg: str) -> Path:
    """A file path to write; InputError when it is a folder or a parent is a file."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{arg} {p} is a folder; give a file name")
    _check_parents(p, arg)
    return p
