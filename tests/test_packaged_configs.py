"""The configs ship inside the package: a wheel carries them and an installed copy reads them
through importlib.resources from any working directory (no checkout on the path)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["deepspeed/zero2.json", "deepspeed/zero3.json", "eval/v1.yaml", "experiments/reproduce.yaml",
           "stages/paper.yaml", "stages/tiny.yaml", "tiers/paper.yaml", "tiers/tiny.yaml"]

CHECK = """
import sys
from pathlib import Path
import sicog
from sicog.config_files import packaged
from sicog.evaluate.settings import load_eval_config
from sicog.model.tiers import load_tier
from sicog.train.config import load_profile
site = Path(sys.argv[1]).resolve()
assert Path(sicog.__file__).resolve().is_relative_to(site), sicog.__file__
assert packaged().resolve().is_relative_to(site), packaged()
assert load_tier("tiny")["vision"] and isinstance(load_tier("paper"), dict)
assert load_eval_config("v1").version
assert load_profile("tiny", "stage2")
assert packaged("deepspeed", "zero2.json").is_file()
print("ok")
"""


def test_configs_are_package_data():
    from sicog.config_files import packaged

    assert packaged() == ROOT / "sicog" / "configs"
    assert (ROOT / "configs").resolve() == packaged().resolve()  # the top-level link of README and scripts
    for rel in SHIPPED:
        assert packaged(*rel.split("/")).is_file(), rel


def test_unknown_named_config_lists_the_shipped_ones():
    from sicog.model.tiers import load_tier

    with pytest.raises(ValueError, match=r"unknown tier 'huge'; known: \['paper', 'tiny'\]"):
        load_tier("huge")


@pytest.mark.slow
def test_wheel_carries_the_configs_and_an_installed_copy_reads_them(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "sicog", src / "sicog", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("sicog-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"sicog/configs/{rel}" for rel in SHIPPED} <= names
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run([sys.executable, "-c", CHECK, str(site)], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]
