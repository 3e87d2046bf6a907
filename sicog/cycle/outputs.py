"""What each step of the cycle produced, as typed paths: the step that makes an output names its
files once, and every later step and the report read them from here. Reading an output that is not
there raises `MissingOutput` naming the step that should have written it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from sicog.cycle.plans import Plan
from sicog.cycle.steps import MissingOutput
from sicog.cycle.variants import Variant


@dataclass(frozen=True)
class StepOutput:
    step: str                             # the step's name: its folder under OUT and its marker

    def require(self, path: Path) -> Path:
        """`path` if it exists, else MissingOutput naming this step."""
        if not path.exists():
            raise MissingOutput(self.step, path)
        return path

    def read_json(self, path: Path) -> dict:
        return json.loads(self.require(path).read_text())


@dataclass(frozen=True)
class Folder(StepOutput):
    """A step whose output is a folder as a whole (the world, unimodal pre-training)."""
    path: Path


@dataclass(frozen=True)
class Model(StepOutput):
    """A model folder (`save_pretrained`): built by `build-model` or trained by `sicog train`."""
    model: Path

    @property
    def train_log(self) -> Path:
        return self.require(self.model / "train_log.jsonl")

    def train_summary(self) -> dict:
        return self.read_json(self.model / "train_summary.json")


@dataclass(frozen=True)
class Records(StepOutput):
    """A step that writes one file (a pool cut, gold texts, preference pairs)."""
    file: Path

    def existing(self) -> Path:
        """The file, or MissingOutput naming the step."""
        return self.require(self.file)


@dataclass(frozen=True)
class SeedData:
    """The stage-0 seed files by name: `cod`, `dd` (annotation), `cot`, `short` (conversion)."""
    files: dict[str, Records]

    def get(self, name: str) -> Path:
        return self.files[name].existing()


@dataclass(frozen=True)
class Pools(StepOutput):
    caption: Path                         # the image pool the captions are generated for
    reasoning: Path                       # the question pool

    def for_task(self, task: str) -> Path:
        """The pool a `caption` or `reasoning` generation reads; MissingOutput naming the step if absent."""
        return self.require(self.caption if task == "caption" else self.reasoning)


@dataclass(frozen=True)
class Candidates(Records):
    """`sicog generate` and `merge-candidates`: N candidates per input in one checked file."""


@dataclass(frozen=True)
class Curation(StepOutput):
    """`sicog curate`: scores, preference pairs and one training file per threshold."""
    folder: Path

    @property
    def scores(self) -> Path:
        return self.require(self.folder / "scores.jsonl")

    @property
    def preferences(self) -> Path:
        return self.require(self.folder / "preferences.jsonl")

    def summary(self) -> dict:
        return self.read_json(self.folder / "summary.json")

    def curated(self, tau: float) -> Path:
        """The training records kept at threshold `tau`, as the step's summary names them."""
        kept = self.summary()["kept"]
        if f"{tau:g}" not in kept:
            raise ValueError(f"step {self.step} curated at thresholds {sorted(kept)}, not at {tau:g}")
        return self.require(self.folder / kept[f"{tau:g}"]["file"])


@dataclass(frozen=True)
class Evaluation(StepOutput):
    """`sicog evaluate`: predictions and `scores.json`."""
    folder: Path

    def scores(self) -> dict:
        return self.read_json(self.folder / "scores.json")


@dataclass(frozen=True)
class Probe(Records):
    """`sicog probe`: one JSON of probe accuracies, answer reading and gates."""

    def result(self) -> dict:
        return self.read_json(self.file)


@dataclass(frozen=True)
class Generated:
    """One stage-1.5 file of a self-generated row and what made it."""
    kind: str                             # perception | reasoning
    warmup: Model                         # the stage-0 model that generated the candidates
    candidates: Candidates
    curation: Curation                    # the embedding curation, or the random pick of `no_curation`
    file: Path                            # the curated records stage 1.5 trains on


@dataclass(frozen=True)
class RowModels:
    """The models of one table row and seed."""
    stage1: Model
    final: Model                          # the stage-2 model that is evaluated
    stage1_5: Model | None = None         # None for the baseline
    data: tuple[Generated, ...] = ()      # the self-generated stage-1.5 data (empty: baseline or oracle)


@dataclass(frozen=True)
class DiagnosticInputs:
    """What the curation diagnostics of one kind read: the SICOG row's candidates and curation, and
    for reasoning the vote-method curation of the same candidates."""
    candidates: Candidates
    curation: Curation
    vote: Curation | None = None


@dataclass
class CycleResult:
    """Every finished output the report reads; the report runs no step."""
    out: Path
    plan: Plan
    variants: list[Variant]
    seeds: list[int]
    evals: dict[tuple[str, int], Evaluation] = field(default_factory=dict)
    blind: dict[str, Evaluation] = field(default_factory=dict)       # shuffled-image control, first seed
    probes: dict[str, Probe] = field(default_factory=dict)           # `sicog probe`, first seed
    steps: dict[tuple[str, int], list[str]] = field(default_factory=dict)   # the steps each row used
    models: dict[tuple[str, int], RowModels] = field(default_factory=dict)
    trained: dict[str, Model] = field(default_factory=dict)          # every training step, by step name
    diagnostics: dict[str, DiagnosticInputs] = field(default_factory=dict)  # captions / reasoning
    world: Path | None = None             # the built world the benchmarks and the judge read

    def has_row(self, name: str) -> bool:
        return any(v.name == name for v in self.variants)
