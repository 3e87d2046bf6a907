"""The configs that ship inside the package (`sicog/configs/`: model tiers, stage hyperparameters,
evaluation settings, experiment plans, DeepSpeed JSON), found with `importlib.resources`, so a
wheel or a non-editable install reads the same files as a checkout. The repository's top-level
`configs/` is a link to this folder, so the paths in the README and the scripts still hold.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def packaged(*parts: str) -> Path:
    """The path of a shipped config folder or file, e.g. `packaged("tiers", "tiny.yaml")`.

    The package is installed as files (a wheel, an editable install or a checkout), so the
    resource is a real path that `open`, `glob` and the DeepSpeed launcher can use.
    """
    node = resources.files("sicog") / "configs"
    for part in parts:
        node = node / part
    return Path(str(node))


def named_yaml(folder: str, name_or_path: str, what: str) -> Path:
    """A YAML config given by its name in the shipped `folder` (`tiny`) or by a path (`my.yaml`);
    ValueError listing the shipped names when it does not exist."""
    p = Path(name_or_path)
    if not p.suffix:
        p = packaged(folder, f"{name_or_path}.yaml")
    if not p.exists():
        known = sorted(x.stem for x in packaged(folder).glob("*.yaml"))
        raise ValueError(f"unknown {what} {name_or_path!r}; known: {known} or a YAML path")
    return p
