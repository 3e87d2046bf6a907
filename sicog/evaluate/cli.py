"""`sicog evaluate`: a checkpoint on the world's held-out benchmarks (QA by skill, POPE, captions)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sicog.evaluate.settings import BENCHMARKS, load_eval_config
from sicog.runtime import resolve_device

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint folder (save_pretrained of a SICOG model)")
    parser.add_argument("--world", required=True, help="a built world folder (sicog world build)")
    parser.add_argument("--out", required=True, help="evaluation folder: predictions, rejects, scores, summary")
    parser.add_argument("--split", default="eval", choices=["eval", "val"],
                        help="eval for reported numbers, val for tuning")
    parser.add_argument("--benchmarks", default=",".join(BENCHMARKS),
                        help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--limit", type=int, default=None, help="first N records of each benchmark (smoke runs)")
    parser.add_argument("--eval-config", default="v1", help="pinned settings: a version in configs/eval or a YAML path")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=None,
                        help="compute precision: bf16 = autocast over the checkpoint's weights; auto: bf16 where the "
                             "CPU/GPU has it natively, else fp32 (default: $SICOG_PRECISION, else auto)")
    parser.add_argument("--images", default="true", choices=["true", "shuffled"],
                        help="shuffled: the blind control, each record shown another record's image")


def run(args: argparse.Namespace) -> int:
    import torch

    from sicog.data.checks import InputError, check_output_dir, check_world
    from sicog.data.output_lock import OutputLock
    from sicog.evaluate.runner import evaluate
    from sicog.model.folder import check_model_folder, load_model_folder
    from sicog.model.precision import default_precision, resolve_precision

    benchmarks = tuple(b.strip() for b in args.benchmarks.split(",") if b.strip())
    unknown = [b for b in benchmarks if b not in BENCHMARKS]
    if unknown:
        raise InputError(f"--benchmarks: unknown {', '.join(map(repr, unknown))}; choose from {','.join(BENCHMARKS)}")
    if not benchmarks:
        raise InputError(f"--benchmarks {args.benchmarks!r} names no benchmark; choose from {','.join(BENCHMARKS)}")
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit {args.limit}: must be at least 1 (the first N records of each benchmark)")
    model_dir = check_model_folder(args.model, "--model")
    check_world(args.world, "--world")
    try:
        cfg = load_eval_config(args.eval_config)
    except ValueError as e:
        raise InputError(f"--eval-config: {e}") from None
    try:
        requested = args.precision or default_precision()
    except ValueError as e:
        raise InputError(str(e)) from None
    out = check_output_dir(args.out, "--out")
    with OutputLock(out, "--out"):
        torch.manual_seed(args.seed)
        device = resolve_device(args.device)
        model, processor = load_model_folder(model_dir, "--model")
        precision = resolve_precision(requested, device)
        log.info("evaluating %s on %s/%s with eval config %s (%s, precision %s)", model_dir, args.world, args.split,
                 cfg.version, device, precision)
        result = evaluate(model, processor, args.world, out, cfg, split=args.split, benchmarks=benchmarks,
                          limit=args.limit, model_name=str(model_dir.resolve()), device=device,
                          images=args.images, precision=precision)
    print((Path(args.out) / "summary.txt").read_text().strip())
    return 0 if any(e["evaluated"] for e in result["benchmarks"].values()) else 1
