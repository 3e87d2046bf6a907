"""One spelling for the commands' own flags (dashes); the older spellings that scripts and the
authors' README use still parse to the same settings, and `--help` does not list them."""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from sicog.cli import COMMANDS
from sicog.world.cli import SUBCOMMANDS

ROOT = Path(__file__).resolve().parents[1]


def parser_of(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"sicog {command}")
    importlib.import_module(COMMANDS[command][0]).add_arguments(parser)
    return parser


def listed_flags(parser: argparse.ArgumentParser) -> set[str]:
    """The option strings `--help` shows, without the HF TrainingArguments fields `train` passes on."""
    hf = {a for g in parser._action_groups if g.title.startswith("HF TrainingArguments") for a in g._group_actions}
    return {s for a in parser._actions if a.help != argparse.SUPPRESS and a not in hf for s in a.option_strings}


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "world"] + [f"world {s}" for s in SUBCOMMANDS])
def test_help_lists_only_dashed_flags(command):
    if command.startswith("world "):
        sub = next(a for a in parser_of("world")._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[command.split()[1]]
        parser.format_help()  # imports the sub-command's module: its flags are added now
    else:
        parser = parser_of(command)
    flags = listed_flags(parser)
    assert len(flags) > 2 and not {f for f in flags if "_" in f}


@pytest.mark.parametrize("command, old, new", [
    ("train", ["--model_name_or_path", "m", "--data_path", "d.jsonl", "--image_folder", "i", "--mm_projector_lr", "1e-4",
               "--global_batch_size", "8", "--dpo_precompute_ref", "true", "--output_dir", "o"],
     ["--model-name-or-path", "m", "--data-path", "d.jsonl", "--image-folder", "i", "--mm-projector-lr", "1e-4",
      "--global-batch-size", "8", "--dpo-precompute-ref", "true", "--output_dir", "o"]),
    ("annotate-cod", ["--image-dir", "i", "--model", "t", "--max-tokens", "9"],
     ["--image-folder", "i", "--teacher", "t", "--max-new-tokens", "9"]),
    ("curate", ["--model", "ckpt/reasoning"], ["--generator", "ckpt/reasoning"]),
    ("generate", ["--max-length", "40"], ["--model-max-length", "40"]),
    ("plan", ["--seq-len", "2048"], ["--model-max-length", "2048"]),
    ("vlmeval", ["--model-path", "m"], ["--model", "m"]),
])
def test_older_spellings_parse_to_the_same_settings(command, old, new):
    required = {"annotate-cod": ["--input", "x", "--output-cod-dir", "c", "--output-dd-dir", "d"],
                "curate": ["--candidates", "c", "--out", "o"],
                "generate": ["--model", "m", "--data", "d", "--image-folder", "i", "--out", "o"],
                "vlmeval": ["--data-dir", "d", "--work-dir", "w"]}.get(command, [])
    parser = parser_of(command)
    assert parser.parse_args(required + old) == parser.parse_args(required + new)
    assert parser.parse_args(required + old) != parser.parse_args(required)  # the old spelling did set something


def test_world_imports_only_the_subcommand_it_runs():
    code = ("import argparse, sys; from sicog.world import cli; p = argparse.ArgumentParser(); cli.add_arguments(p); "
            "p.parse_args(['teacher', '--world', 'w']); "
            "print(sorted(m for m, _ in cli.SUBCOMMANDS.values() if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['sicog.world.teacher']"
