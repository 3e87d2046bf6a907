"""`sicog world <sub-command>`: the mini world's tools.

Each sub-command lives in its own module exposing `add_arguments(parser)` and `run(args)`, imported
only when it runs. `build` and `pretrain` are checked and locked here, before their module runs: a bad
--out, --world or step count stops with one line, and a second run on the same --out stops naming
the first (one writer per output; `export-vlmeval` locks its own --out). A `build` killed part-way is
cleared and built again by the rerun. `export-vlmeval` writes the benchmarks in VLMEvalKit's form with the evaluation
prompts, so its module is `sicog.evaluate.vlmeval_export` (named here, never imported by `world`).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import shutil
from pathlib import Path

from sicog.data.checks import InputError, check_output_dir, check_world
from sicog.data.output_lock import OutputLock

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "build": ("sicog.world.build", "render the world and write every data split, the tokenizer and a manifest"),
    "pretrain": ("sicog.world.pretrain", "pre-train the tiny tier's CLIP and Qwen2 on the world"),
    "teacher": ("sicog.world.teacher", "serve gold CoD captions over the OpenAI chat-completions protocol"),
    "export-vlmeval": ("sicog.evaluate.vlmeval_export", "write the benchmarks as VLMEvalKit TSV datasets"),
}


class _LazyParser(argparse.ArgumentParser):
    """A sub-command's parser that imports its module, and so learns its flags, only when that
    sub-command is parsed (or its --help shown): `sicog world teacher` never imports `pretrain`."""

    def __init__(self, *args, module: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.module = module
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self.module).add_arguments(self)

    def parse_known_args(self, args=None, namespace=None):
        self._load()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._load()
        return super().format_help()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="world_command", metavar="SUBCOMMAND", required=True, parser_class=_LazyParser)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, module=module)
        p.set_defaults(_world_module=module)


def _building(out: Path) -> Path:
    """Beside the world folder while `build` writes it: found by a later build, it means that one was killed."""
    return out.with_name(f".{out.name}.building")


def _check_build(args: argparse.Namespace) -> OutputLock:
    out = check_output_dir(args.out, "--out", create=False)
    if (out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").exists()
            and not _building(out).exists()):
        raise InputError(f"--out {out} is not empty and holds no world (no manifest.json); choose another --out")
    # Beside the folder, not in it: `build` empties a previous world's folder before writing.
    return OutputLock(out, "--out", folder=False)


def _run_build(module, args: argparse.Namespace) -> int | None:
    """`build` under its lock; what a killed build left (no manifest yet) is cleared first, so a rerun
    builds again instead of refusing the folder as someone else's."""
    out = Path(args.out)
    marker = _building(out)
    if marker.exists():
        log.warning("%s holds what a build killed part-way left (%s): clearing it and building again", out, marker)
        shutil.rmtree(out, ignore_errors=True)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{os.getpid()}\n")
    rc = module.run(args)
    marker.unlink()
    return rc


def _check_pretrain(args: argparse.Namespace) -> OutputLock:
    for flag in ("steps", "clip_steps", "lm_steps"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise InputError(f"--{flag.replace('_', '-')} {value}: must be at least 1")
    parts = ("instruct_steps", "instruct_easy_steps", "instruct_focus_steps")
    for flag in parts:
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise InputError(f"--{flag.replace('_', '-')} {value}: must be at least 0 (0: no such part)")
    if not 0.0 <= args.instruct_focus_share <= 1.0:
        raise InputError(f"--instruct-focus-share {args.instruct_focus_share}: must lie between 0 and 1")
    for flag in ("clip_batch", "lm_batch", "lm_block", "instruct_batch", "instruct_focus_batch", "instruct_easy_tries"):
        if getattr(args, flag) < 1:
            raise InputError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be at least 1")
    world = check_world(args.world, "--world")
    needs = ("tokenizer", "data/clip_pretrain.jsonl", "data/lm_text.txt")
    if any(getattr(args, flag) != 0 for flag in parts):
        needs += ("data/lm_chat.jsonl",)
    for need in needs:
        if not (world / need).exists():
            raise InputError(f"--world {world} has no {need}; rebuild it with `sicog world build`")
    if args.instruct_easy_steps != 0 or args.instruct_focus_steps != 0:   # None: the default, which has both
        from sicog.data.records import read_records
        from sicog.world.pretrain_instruct import InstructPlan, check_focus_data

        plan = InstructPlan(easy_steps=int(args.instruct_easy_steps != 0), focus_steps=int(args.instruct_focus_steps != 0),
                            focus_share=args.instruct_focus_share)
        try:
            check_focus_data(read_records(world / "data/lm_chat.jsonl"), plan, world / "data/lm_chat.jsonl")
        except ValueError as e:
            raise InputError(str(e)) from None
    return OutputLock(check_output_dir(args.out, "--out"), "--out")


log = logging.getLogger(__name__)

CHECKS = {"build": _check_build, "pretrain": _check_pretrain}


def run(args: argparse.Namespace) -> int | None:
    module = importlib.import_module(args._world_module)
    check = CHECKS.get(args.world_command)
    if check is None:
        return module.run(args)
    with check(args):
        return _run_build(module, args) if args.world_command == "build" else module.run(args)
