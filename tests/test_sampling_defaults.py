"""One set of sampling defaults and augmentation names: SamplingSettings, the `sicog generate` flags and
the shell scripts."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from sicog.generate.cli import add_arguments, settings_from_args
from sicog.generate.settings import AUGMENT_METHODS, SHELL_NAMES, SamplingSettings, shell_defaults

ROOT = Path(__file__).resolve().parents[1]


def test_flags_default_to_the_settings():
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--model", "m", "--data", "d", "--image-folder", "i", "--out", "o"])
    assert settings_from_args(args) == SamplingSettings()


def test_print_defaults_needs_no_other_flag(capsys):
    p = argparse.ArgumentParser()
    add_arguments(p)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--print-defaults"])
    assert e.value.code == 0 and capsys.readouterr().out == shell_defaults()


def test_shell_reads_the_defaults_and_keeps_what_is_set():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TEMPERATURE": "0.3"}
    env.pop("TOP_P", None)
    script = f'eval "$({sys.executable} {ROOT}/sicog/generate/settings.py)"; echo "$TEMPERATURE $TOP_P $BEAMS $N_CANDIDATES $AUGMENT_CHOICES"'
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=True).stdout.split()
    d = SamplingSettings()
    assert out == ["0.3", str(d.top_p), str(d.num_beams), str(d.num_candidates), ",".join(AUGMENT_METHODS)]
    assert set(SHELL_NAMES) == {f.name for f in fields(SamplingSettings)}


def test_the_recap_scripts_hold_no_sampling_numbers_of_their_own():
    text = (ROOT / "recap_scripts/common.sh").read_text()
    for name in ("TEMPERATURE", "TOP_P", "BEAMS", "N_CANDIDATES", "SEED"):
        assert f"{name}=${{{name}:-" not in text
    assert not [m for m in AUGMENT_METHODS if m in text]  # the corruptions' names too come from settings.py
    assert "sicog/generate/settings.py" in text
