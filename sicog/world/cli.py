"""`sicog world <sub-command>`: the mini world's tools.

Each sub-command lives in its own module exposing `add_arguments(parser)` and `run(args)`, imported
only when it runs.
"""
from __future__ import annotations

import argparse
import importlib

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "build": ("sicog.world.build", "render the world and write every data split, the tokenizer and a manifest"),
    "pretrain": ("sicog.world.pretrain", "pre-train the tiny tier's CLIP and Qwen2 on the world"),
    "teacher": ("sicog.world.teacher", "serve gold CoD captions over the OpenAI chat-completions protocol"),
    "export-vlmeval": ("sicog.world.export_vlmeval", "write the benchmarks as VLMEvalKit TSV datasets"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="world_command", metavar="SUBCOMMAND", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_world_module=module)
        importlib.import_module(module).add_arguments(p)


def run(args: argparse.Namespace) -> int | None:
    return importlib.import_module(args._world_module).run(args)
