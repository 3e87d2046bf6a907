"""VLMEvalKit adapter: a trained SICOG checkpoint evaluated by VLMEvalKit itself.

`SicogVLM` implements VLMEvalKit's model interface (`use_custom_prompt`, `build_prompt`,
`generate_inner`) on top of the same prompts and greedy generator as `sicog evaluate`.
`register()` makes it a subclass of VLMEvalKit's `BaseModel` and places it in `vlmeval.vlm`, which
is where VLMEvalKit's config JSON (`"class": "SicogVLM"`) looks model classes up.

`sicog vlmeval` writes that config JSON for the datasets exported by `sicog world export-vlmeval`
(their manifest gives each dataset's VLMEvalKit class and question type) and for any of
VLMEvalKit's own datasets named with --datasets (MMStar, AI2D_TEST, POPE, ...), points `$LMUData`
at --data-dir and runs VLMEvalKit's own runner, by default with exact-match scoring (no judge
API). VLMEvalKit is an optional extra: `pip install -e .[eval]`.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import string
import sys
from pathlib import Path

import pandas as pd

from sicog.data.formats import IMAGE_TOKEN
from sicog.data.records import write_json
from sicog.evaluate.generation import GreedyGenerator
from sicog.evaluate.prompts import multiple_choice_text, with_suffix
from sicog.evaluate.settings import load_eval_config
from sicog.runtime import rank_info, resolve_device


def import_vlmeval(name: str):
    """Import a VLMEvalKit module without keeping its side effect on autograd.

    `vlmeval.vlm` switches gradients off for the whole process at import; training or tests that
    run later in the same process must not inherit that.
    """
    import torch

    grad = torch.is_grad_enabled()
    try:
        return importlib.import_module(name)
    finally:
        torch.set_grad_enabled(grad)

log = logging.getLogger(__name__)

# VLMEvalKit dataset TYPE -> our question type (prompt suffix); other types keep the dataset's prompt.
VLMEVAL_TYPES = {"MCQ": "multiple_choice", "Y/N": "yes_no"}
# Question type -> the benchmark whose max_new_tokens applies; open-ended datasets get the caption budget.
TOKEN_BUDGET = {"multiple_choice": "qa", "yes_no": "pope", "short_answer": "qa"}


class SicogVLM:
    """A SICOG checkpoint as a VLMEvalKit model (one image per prompt, no interleaving)."""

    INTERLEAVE = False
    is_api = False

    def __init__(self, model_path: str, eval_config: str = "v1", dataset_types: dict | None = None,
                 device: str | None = None):
        import torch

        from sicog.model.folder import load_model_folder

        self.cfg = load_eval_config(eval_config)
        self.dataset_types = dict(dataset_types or {})
        bad = {k: v for k, v in self.dataset_types.items() if v not in TOKEN_BUDGET}
        if bad:
            raise ValueError(f"dataset_types values must be one of {sorted(TOKEN_BUDGET)}: {bad}")
        device = resolve_device(device)
        model, processor = load_model_folder(model_path, "model_path")
        self.generator = GreedyGenerator(model, processor, self.cfg, device=device)
        self.dump_image_func = None
        log.info("SicogVLM: %s on %s, eval config %s", model_path, device, self.cfg.version)

    # VLMEvalKit hooks -----------------------------------------------------------------------
    def set_dump_image(self, dump_image_func) -> None:
        self.dump_image_func = dump_image_func

    def dump_image(self, line, dataset):
        return self.dump_image_func(line)

    def question_type(self, dataset: str | None) -> str | None:
        """Our question type for a dataset: from `dataset_types`, else from VLMEvalKit's dataset TYPE."""
        if dataset in self.dataset_types:
            return self.dataset_types[dataset]
        if dataset is None:
            return None
        try:
            dataset_type = import_vlmeval("vlmeval.dataset").DATASET_TYPE
        except ImportError:
            return None
        return VLMEVAL_TYPES.get(dataset_type(dataset, default="VQA"))

    def use_custom_prompt(self, dataset: str | None) -> bool:
        return self.question_type(dataset) is not None

    def build_prompt(self, line, dataset: str | None = None) -> list[dict]:
        """VLMEvalKit message (image paths, then the text) for a TSV row, with our pinned suffixes."""
        qtype = self.question_type(dataset)
        paths = self.dump_image(line, dataset)
        paths = paths if isinstance(paths, list) else [paths]
        question = str(line["question"]).strip()
        hint = line.get("hint") if hasattr(line, "get") else None
        if hint is not None and not pd.isna(hint):
            question = f"Hint: {hint}\n{question}"
        options = {c: str(line[c]) for c in string.ascii_uppercase if c in line and not pd.isna(line[c])}
        if qtype == "multiple_choice" and options:
            text = multiple_choice_text(question, options, self.cfg.suffix["multiple_choice"])
        elif qtype == "yes_no":
            text = with_suffix(question, self.cfg.suffix["yes_no"])
        else:
            text = with_suffix(question, self.cfg.suffix["short_answer"])
        return [dict(type="image", value=p) for p in paths] + [dict(type="text", value=text)]

    def generate_inner(self, message: list[dict], dataset: str | None = None) -> str:
        """Greedy answer to a VLMEvalKit message: the first image and all text parts joined by newlines."""
        text = "\n".join(m["value"] for m in message if m["type"] == "text")
        images = [m["value"] for m in message if m["type"] == "image"]
        if images:
            image = self.generator.load_image(images[0])
            prompt = f"{IMAGE_TOKEN}\n{text}"
        else:
            image, prompt = None, text
        budget = TOKEN_BUDGET.get(self.question_type(dataset), "captions")
        item = self.generator.encode(prompt, image)
        return self.generator.generate([item], budget)[0]


def register() -> type:
    """Make `SicogVLM` a VLMEvalKit `BaseModel` and expose it as `vlmeval.vlm.SicogVLM`."""
    vlm = import_vlmeval("vlmeval.vlm")
    base_model = import_vlmeval("vlmeval.vlm.base").BaseModel

    cls = type("SicogVLM", (SicogVLM, base_model), {"__module__": __name__, "__doc__": SicogVLM.__doc__})
    vlm.SicogVLM = cls
    return cls


def dataset_entries(datasets: list[str], manifest: dict | None) -> tuple[dict, dict]:
    """VLMEvalKit `data` entries and our question types for the chosen datasets.

    Exported datasets take their class and type from the export manifest; any other name must be
    one of VLMEvalKit's own datasets (MMStar, AI2D_TEST, POPE, ...), whose class VLMEvalKit's
    registry gives and whose TSV VLMEvalKit fetches itself.
    """
    exported = (manifest or {}).get("datasets", {})
    data, types, unknown = {}, {}, []
    for d in datasets:
        if d in exported:
            data[d] = {"class": exported[d]["class"], "dataset": d}
            types[d] = exported[d]["type"]
            continue
        dataset_classes = import_vlmeval("vlmeval.dataset").DATASET_CLASSES
        cls = next((c for c in dataset_classes if d in c.supported_datasets()), None)
        if cls is None:
            unknown.append(d)
        else:
            data[d] = {"class": cls.__name__, "dataset": d}
    if unknown:
        raise ValueError(f"datasets {unknown} are neither exported ({sorted(exported)}) nor known to VLMEvalKit")
    return data, types


def vlmeval_config(model_name: str, model_path: str, data: dict, types: dict, eval_config: str) -> dict:
    """VLMEvalKit's config JSON: one SicogVLM model and the dataset entries."""
    return {
        "model": {model_name: {
            "class": "SicogVLM",
            "model_path": str(Path(model_path).resolve()),
            "eval_config": eval_config,
            "dataset_types": types,
        }},
        "data": data,
    }


def collect_scores(work_dir: Path, model_name: str, datasets: list[str]) -> dict:
    """VLMEvalKit's score tables per dataset (`*_acc.csv` for multiple choice, `*_score.csv` otherwise)."""
    scores = {}
    for d in datasets:
        found = sorted(p for p in (work_dir / model_name).glob(f"T*/{model_name}_{d}_*.csv")
                       if p.name.endswith(("_acc.csv", "_score.csv")))
        if found:
            scores[d] = pd.read_csv(found[-1]).to_dict(orient="records")
    return scores


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sicog.data.checks import add_flag

    add_flag(parser, "--model", "--model-path", help="a trained SICOG checkpoint folder (required)")
    parser.add_argument("--data-dir", required=True,
                        help="$LMUData: the folder written by `sicog world export-vlmeval`, where VLMEvalKit also "
                             "keeps the TSVs of its own datasets")
    parser.add_argument("--work-dir", required=True, help="VLMEvalKit output folder")
    parser.add_argument("--datasets", default=None,
                        help="comma-separated exported or VLMEvalKit dataset names (default: all exported)")
    parser.add_argument("--judge", default="exact_matching",
                        help="VLMEvalKit judge; exact_matching needs no API (open-ended benchmarks need a GPT judge)")
    parser.add_argument("--eval-config", default="v1", help="eval config version or YAML path")
    parser.add_argument("--model-name", default=None, help="name in VLMEvalKit's outputs (default sicog-<folder>)")
    parser.add_argument("--limit", type=int, default=None, help="first N rows of each dataset (smoke runs)")


def run(args: argparse.Namespace) -> int:
    from sicog.data.checks import InputError, check_input_dir, check_output_dir
    from sicog.model.folder import check_model_folder

    if args.model is None:
        raise InputError("--model is required: a trained SICOG checkpoint folder")
    check_model_folder(args.model, "--model")
    check_input_dir(args.data_dir, "--data-dir", "the TSV folder written by `sicog world export-vlmeval`")
    check_output_dir(args.work_dir, "--work-dir", create=False)
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit {args.limit}: must be at least 1 (the first N rows of each dataset)")
    try:
        vlmeval_run = import_vlmeval("vlmeval.run")
    except ImportError as e:
        print(f"VLMEvalKit is not installed ({e}); install the eval extra: pip install -e '.[eval]'", file=sys.stderr)
        return 2
    data_dir, work_dir = Path(args.data_dir).resolve(), Path(args.work_dir).resolve()
    manifest_path = data_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
    if manifest is None and not args.datasets:
        print(f"{manifest_path} not found: run `sicog world export-vlmeval --out {data_dir}` first, "
              "or name VLMEvalKit datasets with --datasets", file=sys.stderr)
        return 2
    datasets = args.datasets.split(",") if args.datasets else sorted(manifest["datasets"])
    model_name = args.model_name or f"sicog-{Path(args.model).resolve().name}"
    try:
        data, types = dataset_entries(datasets, manifest)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    cfg = vlmeval_config(model_name, args.model, data, types, args.eval_config)
    work_dir.mkdir(parents=True, exist_ok=True)
    config_path = work_dir / "vlmeval_config.json"
    write_json(config_path, cfg)
    os.environ["LMUData"] = str(data_dir)
    register()
    argv = ["vlmeval", "--config", str(config_path), "--work-dir", str(work_dir), "--judge", args.judge]
    if args.limit is not None:
        argv += ["--first-n", str(args.limit)]
    saved, sys.argv = sys.argv, argv
    try:
        vlmeval_run.main()
    finally:
        sys.argv = saved
    if rank_info().rank != 0:  # under torchrun VLMEvalKit scores on rank 0 only
        return 0
    scores = collect_scores(work_dir, model_name, datasets)
    version = load_eval_config(args.eval_config).version
    write_json(work_dir / "vlmeval_scores.json", {"version": version, "model": model_name, "scores": scores})
    missing = [d for d in datasets if d not in scores]
    for d, table in scores.items():
        print(f"[eval {version}] {model_name} {d}: {table}")
    if missing:
        print(f"VLMEvalKit produced no scores for {missing}; see its log above", file=sys.stderr)
        return 1
    return 0
