"""The `sicog` command.

Each subcommand lives in the module that does the work; that module exposes
`add_arguments(parser)` and `run(args) -> int | None`. Modules are imported only when their
subcommand runs, so `sicog --help` is fast and one broken area does not break the others.

A bad input (`sicog.data.checks.InputError`: a path, a value, a file's content) is printed as one
line naming the argument, with exit status 2; `sicog --debug COMMAND ...` (or SICOG_DEBUG=1) shows
its traceback too. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from sicog.data.checks import InputError

COMMANDS: dict[str, tuple[str, str]] = {
    "build-model": ("sicog.model.build", "assemble a fresh SICOG model from a CLIP folder and an LLM folder"),
    "import-checkpoint": ("sicog.model.authors", "convert a checkpoint saved by the authors' code into our format"),
    "train": ("sicog.train.cli", "train any stage (stage0, stage1, stage1_5, stage2, dpo)"),
    "plan": ("sicog.train.plan", "per-GPU memory, batch arithmetic and steps per epoch of a launch, before it starts"),
    "generate": ("sicog.generate.cli", "generate N candidate captions or answers per input"),
    "merge-candidates": ("sicog.generate.merge", "merge per-rank candidate shards into one checked file"),
    "curate": ("sicog.curate.cli", "self-consistency curation of candidates"),
    "build-preferences": ("sicog.curate.preferences", "preference pairs from curation and corrupted-image candidates"),
    "annotate-cod": ("sicog.annotate.cod", "annotate CoD captions through an OpenAI-compatible teacher"),
    "convert-cot": ("sicog.annotate.cot", "convert LLaVA-CoT records to the four-step and short formats"),
    "evaluate": ("sicog.evaluate.cli", "evaluate a model on the mini world's benchmarks"),
    "probe": ("sicog.evaluate.probe", "does a model read its images: linear probes and own-vs-shuffled answers"),
    "vlmeval": ("sicog.evaluate.vlmeval_adapter", "evaluate a checkpoint with VLMEvalKit on exported TSV datasets"),
    "reproduce": ("sicog.cycle.reproduce", "run the whole SICOG cycle on the mini world and report"),
    "world": ("sicog.world.cli", "the mini world: build, pretrain, teacher, export-vlmeval"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("SICOG_DEBUG", "") not in ("", "0")
    if argv[:1] == ["--debug"]:
        argv, debug = argv[1:], True
    parser = argparse.ArgumentParser(prog="sicog", description="SICOG reference implementation")
    parser.add_argument("--debug", action="store_true", help="show the traceback of bad-input errors too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        args = parser.parse_args(argv)
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    cmd_parser = argparse.ArgumentParser(prog=f"sicog {name}", description=COMMANDS[name][1])
    module.add_arguments(cmd_parser)
    args = cmd_parser.parse_args(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        rc = module.run(args)
    except InputError as e:
        if debug:
            raise
        logging.getLogger("sicog").debug("bad input", exc_info=True)
        print(f"sicog {name}: error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
