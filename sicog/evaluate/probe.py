"""`sicog probe`: does a model read its images? Perception gates for a model on a world.

Two measurements, each a few minutes on a CPU:

1. **Linear probes** (linear_probes.py): what the features of the vision tower and of the connector
   carry of each image's objects (count, colours, shapes, background; each object's shape and colour).
2. **Answer reading** (answer_reading.py): the teacher-forced gold answers of the QA and POPE records,
   with each record's own image and with another record's; a model that ignores its images scores
   the same both ways.

`GATES` holds the thresholds a mini world and tiny tier must pass before the SICOG cycle can show
an effect on it; `format_table` prints each figure beside its gate.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from sicog.data.checks import InputError, check_input_dir, check_output_file, check_world
from sicog.data.records import write_json
from sicog.evaluate.answer_reading import run_answers
from sicog.evaluate.linear_probes import PROBE_TARGETS, Features, load_scenes, run_probes
from sicog.evaluate.runner import benchmark_file
from sicog.evaluate.settings import load_eval_config
from sicog.runtime import resolve_device

log = logging.getLogger(__name__)

# Minimum figures (probe accuracy / balanced accuracy; answer accuracy gap own - shuffled).
GATES: dict[str, dict[str, float]] = {
    "tower": {"shape": 0.85, "colour": 0.90, "count": 0.70},
    "answers": {"gap": 0.20},
}


def gate_checks(result: dict) -> list[dict]:
    """Each gate with its figure and whether it passes (absent parts are not checked)."""
    checks = []
    if "tower" in result.get("probes", {}):
        for target, need in GATES["tower"].items():
            value = result["probes"]["tower"][target]
            checks.append({"gate": f"tower {target}", "value": value, "need": need, "pass": value >= need})
    if "answers" in result:
        value = result["answers"]["gap"]["overall"]["accuracy"]
        need = GATES["answers"]["gap"]
        checks.append({"gate": "answer accuracy, own - shuffled", "value": value, "need": need, "pass": value >= need})
    return checks


def format_table(result: dict) -> str:
    lines = []
    probes = result.get("probes")
    if probes:
        parts = [p for p in ("tower", "connector") if p in probes]
        lines.append(f"Linear probes (train {probes['train']['split']} n={probes['train']['images']}, "
                     f"test {probes['test']['split']} n={probes['test']['images']}; presence: balanced accuracy)")
        lines.append("| target | majority | " + " | ".join(parts) + " |")
        lines.append("|---|---:|" + "---:|" * len(parts))
        for t in PROBE_TARGETS:
            lines.append(f"| {t} | {probes['majority'][t]:.3f} | " + " | ".join(f"{probes[p][t]:.3f}" for p in parts) + " |")
    answers = result.get("answers")
    if answers:
        if lines:
            lines.append("")
        lines.append(f"Answer reading, teacher-forced ({answers['split']}, eval config {answers['eval_config']})")
        lines.append("| skill | n | accuracy own | accuracy shuffled | gap | loss own | loss shuffled |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for k, own in answers["own"].items():
            sh = answers["shuffled"][k]
            lines.append(f"| {k} | {own['n']} | {own['accuracy']:.3f} | {sh['accuracy']:.3f} | "
                         f"{own['accuracy'] - sh['accuracy']:+.3f} | {own['loss']:.3f} | {sh['loss']:.3f} |")
    checks = gate_checks(result)
    if checks:
        lines.append("")
        lines.append("Gates: " + "; ".join(f"{c['gate']} {c['value']:.3f} (>= {c['need']}) "
                                           f"{'pass' if c['pass'] else 'FAIL'}" for c in checks))
    return "\n".join(lines)


def probe(world: str | Path, model_path: str | Path | None = None, vision_path: str | Path | None = None, *,
          train_split: str = "align", test_split: str = "sft", n_train: int | None = 1500, n_test: int | None = 500,
          answer_split: str = "val", answer_limit: int | None = None, parts: tuple[str, ...] = ("probes", "answers"),
          eval_config: str = "v1", batch_size: int = 32, device: str | None = None) -> dict:
    """Run the probes and/or the answer reading; returns the result dict (see the module doc)."""
    world = Path(world)
    device = resolve_device(device)
    t0 = time.time()
    result: dict = {"world": str(world)}
    if model_path is not None:
        from sicog.model.folder import load_model_folder

        model, processor = load_model_folder(model_path, "--model")
        model = model.to(device).eval()
        features = Features(model=model)
        result["model"] = str(model_path)
    else:
        from transformers import CLIPImageProcessor, CLIPVisionModel

        if vision_path is None or not (Path(vision_path) / "config.json").is_file():
            raise FileNotFoundError(f"--vision: {vision_path} is not a CLIP vision folder (no config.json)")
        vision = CLIPVisionModel.from_pretrained(vision_path).to(device).eval()
        ip = CLIPImageProcessor.from_pretrained(vision_path)
        features = Features(vision=vision, image_mean=ip.image_mean, image_std=ip.image_std)
        result["vision"] = str(vision_path)
        parts = tuple(p for p in parts if p != "answers")
    if "probes" in parts:
        result["probes"] = run_probes(features, world, train_split, test_split, n_train, n_test, batch_size, device)
    if "answers" in parts:
        result["answers"] = run_answers(model, processor, world, answer_split, eval_config, answer_limit,
                                        max(1, batch_size // 2), device)
    result["gates"] = gate_checks(result)
    result["seconds"] = round(time.time() - t0, 1)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a SICOG checkpoint folder: probes of tower and connector, and answer reading")
    src.add_argument("--vision", help="a CLIP vision folder (e.g. `world pretrain`'s OUT/clip): tower probes only")
    parser.add_argument("--world", required=True, help="a built world folder")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    parser.add_argument("--parts", default="probes,answers", help="comma-separated: probes, answers")
    parser.add_argument("--train-split", default="align", help="images the linear probes are fit on")
    parser.add_argument("--test-split", default="sft", help="images the linear probes are tested on")
    parser.add_argument("--n-train", type=int, default=1500)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--split", default="val", choices=["val", "eval"], help="benchmark split of the answer reading")
    parser.add_argument("--limit", type=int, default=None, help="first N records of each benchmark")
    parser.add_argument("--eval-config", default="v1")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default=None)


def run(args: argparse.Namespace) -> int:
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    bad = [p for p in parts if p not in ("probes", "answers")]
    if bad or not parts:
        raise InputError(f"--parts: unknown {bad}; choose from probes,answers")
    for name in ("n_train", "n_test", "limit", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1")
    if args.out:
        check_output_file(args.out, "--out")
    if args.model is not None:
        from sicog.model.folder import check_model_folder

        check_model_folder(args.model, "--model")
    else:
        check_input_dir(args.vision, "--vision", "a CLIP vision folder")
        if not (Path(args.vision) / "config.json").is_file():
            raise InputError(f"--vision {args.vision} is not a CLIP vision folder (no config.json)")
    world = check_world(args.world, "--world")
    if "probes" in parts:
        for arg, split in (("--train-split", args.train_split), ("--test-split", args.test_split)):
            try:
                load_scenes(world, split, 1)
            except ValueError as e:
                raise InputError(f"{arg}: {e}") from None
    if "answers" in parts and args.model is not None:
        try:
            load_eval_config(args.eval_config)
        except ValueError as e:
            raise InputError(f"--eval-config: {e}") from None
        missing = [str(p) for b in ("qa", "pope") if not (p := benchmark_file(world, args.split, b)).is_file()]
        if missing:
            raise InputError(f"--world {world}: benchmark files not found: {missing} (is it a built world?)")
    result = probe(args.world, args.model, args.vision, train_split=args.train_split, test_split=args.test_split,
                   n_train=args.n_train, n_test=args.n_test, answer_split=args.split, answer_limit=args.limit,
                   parts=parts, eval_config=args.eval_config, batch_size=args.batch_size, device=args.device)
    print(format_table(result))
    print(f"({result['seconds']} s)")
    if args.out:
        write_json(args.out, result)
        log.info("wrote %s", args.out)
    return 0
