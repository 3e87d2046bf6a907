"""`sicog curate`: self-consistency curation of a candidate file (SPEC section 1, step 3).

For every input, the compared part of each candidate (CoD: step 5, CoT: step 4, else the whole
text) is embedded, each candidate scores its mean cosine similarity to all N candidates (itself
included), the argmax is chosen and the input kept at each threshold its max score reaches.

Outputs in --out:
  curated_tau{T}.jsonl    stage-1.5 training records (LLaVA format), one file per threshold
  preferences.jsonl       {id, image, prompt, chosen, rejected} per scored input
  scores.jsonl            every candidate's score, the argmax and the max score per input
  rejects.jsonl           every line, input or pair that could not be used, with the reason
  summary.json            counts, kept per threshold, score statistics, skipped inputs, throughput
  plots/score_histogram.png, plots/kept_vs_threshold.png

Inputs with fewer than --min-candidates usable (non-empty) candidates are skipped with the
reason: a single candidate scores 1.0 trivially and says nothing about consistency, so by
default (2) such inputs are not kept. Duplicate candidates count as separate votes, as in the
paper's formula. Under torchrun each rank scores its share of the inputs (every world-size-th
input), results are gathered and rank 0 writes. Scored inputs are appended to a per-rank partial
file as they finish, so a killed run resumes where it stopped.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist
from tqdm import tqdm

from sicog.curate.candidates import KINDS, is_step_formatted, load_candidates
from sicog.curate.embed import ENCODER_DTYPES, default_encoder_path, load_encoder
from sicog.curate.plots import plot_kept_vs_threshold, plot_score_histogram
from sicog.curate.select import (
    METHODS,
    input_problem,
    kept,
    preference_pair,
    score_inputs,
    score_stats,
    training_record,
)
from sicog.data.checks import InputError, add_flag, check_input_dir, check_input_file, check_output_dir
from sicog.data.output_lock import OutputLock
from sicog.data.records import JsonlAppender, read_appended, write_json, write_jsonl
from sicog.model.precision import PRECISIONS, default_precision, resolve_precision
from sicog.runtime import rank_info, resolve_device

log = logging.getLogger("sicog.curate")


def parse_thresholds(text: str) -> list[float]:
    try:
        values = sorted({float(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"thresholds must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one threshold")
    outside = [v for v in values if not 0 <= v <= 1]
    if outside:
        # a max score lies in [0, 1]: a vote share is above 0, and the best candidate's mean cosine
        # similarity is at least the mean over all candidates, |mean embedding|^2 >= 0. So tau = 0
        # keeps every input (a legitimate "no filtering" run), and above 1 nothing would be kept
        raise argparse.ArgumentTypeError(f"thresholds must lie in [0, 1] (the range of a max score), got {outside}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--candidates", required=True, help="candidate file (JSONL or JSON list) from `sicog generate`")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--kind", default="auto", choices=("auto",) + KINDS,
                        help="what the candidates are: cod (compare step 5), cot (compare step 4), plain "
                             "(whole text); auto reads generation.task/prompt_name of each line")
    parser.add_argument("--method", default="embedding", choices=METHODS,
                        help="embedding: mean cosine similarity (the paper); vote: majority of final answers; "
                             "random: one seeded random candidate per input, kept at every threshold (the "
                             "no-curation ablation)")
    parser.add_argument("--encoder", default=None,
                        help="local sentence-transformers folder (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow the encoder folder's own code (needed by NV-Embed-v2)")
    parser.add_argument("--max-seq-length", type=int, default=None, help="encoder truncation length")
    parser.add_argument("--encoder-dtype", default="auto", choices=ENCODER_DTYPES,
                        help="encoder precision (auto: the folder's own)")
    parser.add_argument("--precision", default=None, choices=PRECISIONS,
                        help="encoder compute precision: bf16 = autocast over the encoder's weights (about 2x on a "
                             "CPU with native bf16, scores within ~1e-3); default SICOG_PRECISION, else auto (bf16 "
                             "where the device has it natively)")
    parser.add_argument("--padding-side", default=None, choices=("left", "right"),
                        help="encoder tokenizer padding side (default: the folder's own; NV-Embed-v2: right)")
    parser.add_argument("--append-eos", action="store_true",
                        help="append the encoder tokenizer's EOS token to every text (NV-Embed-v2 asks for it)")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per encoder batch")
    parser.add_argument("--chunk-size", type=int, default=512, help="inputs scored (and saved) per step")
    parser.add_argument("--thresholds", type=parse_thresholds, default=parse_thresholds("0.8,0.85,0.9"))
    parser.add_argument("--min-candidates", type=int, default=2,
                        help="inputs with fewer usable candidates are skipped (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the rejected-candidate choice and of --method random's pick")
    add_flag(parser, "--generator", "--model", default=None,
             help="the model that generated the candidates: a label, recorded in summary.json as `model`")
    parser.add_argument("--device", default="auto", help="auto (cuda:LOCAL_RANK if available, else cpu), cpu, cuda:0, ...")
    parser.add_argument("--dist-timeout-min", type=int, default=120, help="collective timeout under torchrun")


def _init_distributed(timeout_min: int) -> tuple[int, int]:
    world = rank_info().world_size
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timedelta(minutes=timeout_min))
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _fingerprint(args: argparse.Namespace, encoder: str | None) -> str:
    stat = Path(args.candidates).stat()
    key = json.dumps([str(Path(args.candidates).resolve()), stat.st_size, stat.st_mtime_ns, args.kind,
                      args.method, encoder, args.max_seq_length, args.encoder_dtype, args.precision, args.padding_side,
                      args.append_eos,
                      args.min_candidates, args.seed if args.method == "random" else None])
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _read_partial(folder: Path, fingerprint: str) -> dict[str, dict]:
    done: dict[str, dict] = {}
    for path in sorted(folder.glob(f"scores-{fingerprint}.rank*.jsonl")):
        for rec in read_appended(path):  # a line cut by a kill is scored again
            if "id" in rec:
                done[str(rec["id"])] = rec
    return done


def run(args: argparse.Namespace) -> int:
    if args.min_candidates < 1:
        raise InputError(f"--min-candidates {args.min_candidates}: must be at least 1")
    for flag in ("batch_size", "chunk_size"):
        if getattr(args, flag) < 1:
            raise InputError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be at least 1")
    check_input_file(args.candidates, "--candidates")
    if args.encoder and args.method == "embedding":
        check_input_dir(args.encoder, "--encoder", "a local sentence-transformers model folder")
    out = check_output_dir(args.out, "--out")
    rank, world = _init_distributed(args.dist_timeout_min)
    try:
        # one writer per output: each rank locks its own name, so a second job stops on every rank
        with OutputLock(out, "--out", suffix="" if rank == 0 else f".rank{rank}"):
            return _curate(args, out, rank, world)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _curate(args: argparse.Namespace, out: Path, rank: int, world: int) -> int:
    started = time.perf_counter()
    scorable, rejects, generations, lines_read = _read_inputs(args)
    encoder_name = None
    if args.method == "embedding":
        encoder_name = str(Path(args.encoder).resolve()) if args.encoder else str(default_encoder_path())
        # resolved before the fingerprint: scores of another precision are not resumed into these
        args.precision = resolve_precision(args.precision or default_precision(), resolve_device(args.device))
    partial_dir = out / ".partial"
    fingerprint = _fingerprint(args, encoder_name)
    done = _read_partial(partial_dir, fingerprint) if partial_dir.is_dir() else {}
    mine = scorable[rank::world]
    if rank != 0:
        scorable = None  # only rank 0 writes the outputs; the others keep their share alone
    todo = [item for item in mine if item.id not in done]
    log.info("rank %d/%d: %d inputs to score (%d already scored), %d lines rejected or skipped",
             rank, world, len(todo), len(mine) - len(todo), len(rejects))

    partial_path = partial_dir / f"scores-{fingerprint}.rank{rank}.jsonl"
    throughput = _score(args, todo, done, encoder_name, partial_path, rank)
    my_results, throughput = _gather([done[item.id] for item in mine], throughput, rank, world)
    rc = 0
    if rank == 0:
        by_id = {r["id"]: r for r in my_results}
        results = [by_id[item.id] for item in scorable]
        rc = _write_outputs(args, out, scorable, results, rejects, generations, encoder_name, world,
                            lines_read, throughput, time.perf_counter() - started)
    _remove_partial(partial_dir, partial_path, rank, world)
    return rc


def _read_inputs(args: argparse.Namespace) -> tuple[list, list[dict], list[dict], int]:
    """The candidate file read: the scorable inputs, the rejected or skipped lines (stage `input`),
    the generation blocks and the number of lines read."""
    try:
        items, rejects, generations = load_candidates(args.candidates, args.kind)
    except (OSError, ValueError) as e:  # missing file, or a JSON-list file that does not parse
        raise InputError(f"--candidates: {e}") from None
    lines_read = len(items) + len(rejects)
    if not lines_read:
        raise InputError(f"--candidates {args.candidates} holds no records (an empty file)")
    for r in rejects:
        r["stage"] = "input"
    scorable = []
    for item in items:
        problem = input_problem(item, args.method, args.min_candidates)
        if problem:
            rejects.append({"id": item.id, "line": item.line, "stage": "input", "reason": problem})
        else:
            scorable.append(item)
    return scorable, rejects, generations, lines_read


def _score(args: argparse.Namespace, todo: list, done: dict[str, dict], encoder_name: str | None,
           partial_path: Path, rank: int) -> tuple[int, float]:
    """Score `todo` chunk by chunk into `done`, each result appended to this rank's partial file;
    returns (candidates scored, seconds)."""
    encoder = None
    if todo and args.method == "embedding":
        encoder = load_encoder(encoder_name, str(resolve_device(args.device)), args.trust_remote_code, args.max_seq_length,
                               args.encoder_dtype, args.padding_side, args.append_eos, args.precision)
    scored_candidates = 0
    score_started = time.perf_counter()
    with JsonlAppender(partial_path, fsync=False) as appender, \
            tqdm(total=len(todo), desc=f"curate[{rank}]", unit="input", disable=rank != 0) as bar:
        for start in range(0, len(todo), args.chunk_size):
            chunk = todo[start:start + args.chunk_size]
            for result in score_inputs(chunk, args.method, encoder, args.batch_size, args.seed):
                appender.write(result)
                done[result["id"]] = result
            scored_candidates += sum(len(item.usable) for item in chunk)
            bar.update(len(chunk))
    score_seconds = time.perf_counter() - score_started
    if todo:
        log.info("rank %d: scored %d candidates in %.1fs (%.1f candidates/s)", rank, scored_candidates,
                 score_seconds, scored_candidates / max(score_seconds, 1e-9))
    return scored_candidates, score_seconds


def _gather(my_results: list[dict], throughput: tuple[int, float], rank: int,
            world: int) -> tuple[list[dict], list[tuple[int, float]]]:
    """Every rank's results and throughput on rank 0 (under torchrun); a rank's own elsewhere."""
    if world == 1:
        return my_results, [throughput]
    gathered: list | None = [None] * world if rank == 0 else None
    dist.gather_object((my_results, throughput), gathered, dst=0)
    if rank != 0:
        return my_results, [throughput]
    return [r for part, _ in gathered for r in part], [t for _, t in gathered]


def _remove_partial(partial_dir: Path, partial_path: Path, rank: int, world: int) -> None:
    """This rank's partial file removed, and on rank 0 the emptied folder, once the outputs are written."""
    if world > 1:
        dist.barrier()  # outputs written: the partial files are no longer needed
    partial_path.unlink(missing_ok=True)
    if world > 1:
        dist.barrier()
    if rank == 0 and partial_dir.is_dir() and not any(partial_dir.iterdir()):
        partial_dir.rmdir()


def _preference_pairs(items, results, rejects: list[dict], seed: int) -> list[dict]:
    """A preference pair per scored input; the inputs without one go to `rejects` (stage `pair`)."""
    pairs = []
    for item, result in zip(items, results):
        pair, reason = preference_pair(item, result, seed)
        if pair is None:
            rejects.append({"id": item.id, "line": item.line, "stage": "pair", "reason": reason})
        else:
            pairs.append(pair)
    return pairs


def _write_kept(out: Path, items, results, thresholds: list[float]) -> dict[str, dict]:
    """`curated_tau{T}.jsonl` per threshold; returns the count, fraction and file of each."""
    kept_summary = {}
    for tau in thresholds:
        keep_ids = {r["id"] for r in kept(results, tau)}
        name = f"curated_tau{tau:g}.jsonl"
        write_jsonl(out / name, (training_record(item, r) for item, r in zip(items, results) if item.id in keep_ids))
        kept_summary[f"{tau:g}"] = {"count": len(keep_ids),
                                    "fraction": len(keep_ids) / len(results) if results else 0.0,
                                    "file": name}
    return kept_summary


def _counts(items, results, rejects: list[dict], pairs: list[dict], lines_read: int) -> dict[str, int]:
    return {
        "lines_read": lines_read,
        "rejected_or_skipped": sum(r["stage"] == "input" for r in rejects),
        "scored": len(results),
        "candidates": sum(len(item.candidates) for item in items),
        "candidates_compared": sum(r["n_used"] for r in results),
        "empty_candidates_excluded": sum(r["n_candidates"] - r["n_used"] for r in results),
        "inputs_with_duplicate_candidates": sum(r["duplicates"] > 0 for r in results),
        "chosen_in_step_format": sum(is_step_formatted(item.candidates[r["argmax"]], item.kind)
                                     for item, r in zip(items, results)),
        "preference_pairs": len(pairs),
        "pairs_not_built": sum(r["stage"] == "pair" for r in rejects),
    }


def _write_outputs(args, out: Path, items, results, rejects, generations, encoder_name, world,
                   lines_read, throughput, seconds) -> int:
    out.mkdir(parents=True, exist_ok=True)
    pairs = _preference_pairs(items, results, rejects, args.seed)
    kept_summary = _write_kept(out, items, results, args.thresholds)
    write_jsonl(out / "preferences.jsonl", pairs)
    write_jsonl(out / "scores.jsonl", results)
    write_jsonl(out / "rejects.jsonl", sorted(rejects, key=lambda r: (r["line"], r["stage"])))

    max_scores = [r["max_score"] for r in results]
    all_scores = [s for r in results for s in r["scores"] if s is not None]
    title = (f"random pick (no curation), {len(results)} inputs" if args.method == "random"
             else f"{args.method} self-consistency, {len(results)} inputs")
    plot_score_histogram(out / "plots" / "score_histogram.png", max_scores, all_scores, args.thresholds, title)
    plot_kept_vs_threshold(out / "plots" / "kept_vs_threshold.png", max_scores, args.thresholds, title)

    encoded = sum(n for n, _ in throughput)
    busiest = max((s for _, s in throughput), default=0.0)
    summary = {
        "candidates_file": str(args.candidates),
        "model": args.generator,
        "generation_models": sorted({str(g.get("model")) for g in generations if g.get("model") is not None}),
        "generation": generations[:10],
        "method": args.method,
        "kind": args.kind,
        "kinds": {k: sum(item.kind == k for item in items) for k in sorted({item.kind for item in items})},
        "encoder": encoder_name,
        "encoder_dtype": args.encoder_dtype if encoder_name else None,
        "encoder_precision": args.precision if encoder_name else None,
        "padding_side": args.padding_side,
        "append_eos": args.append_eos,
        "thresholds": args.thresholds,
        "min_candidates": args.min_candidates,
        "seed": args.seed,
        "world_size": world,
        "counts": _counts(items, results, rejects, pairs, lines_read),
        "kept": kept_summary,
        "score_stats": {"max_score": score_stats(max_scores), "all_candidates": score_stats(all_scores)},
        "skipped": [{"id": r["id"], "line": r["line"], "reason": r["reason"]}
                    for r in sorted(rejects, key=lambda r: r["line"]) if r["stage"] == "input"],
        "throughput": {"candidates_scored": encoded, "score_seconds_busiest_rank": busiest,
                       "candidates_per_s": encoded / busiest if busiest > 0 else None,
                       "wall_seconds": seconds},
    }
    write_json(out / "summary.json", summary)
    line = ", ".join(f"tau {k}: {v['count']}/{len(results)}" for k, v in kept_summary.items())
    log.info("curated %d inputs (%s); %d pairs; %d rejected or skipped -> %s", len(results), line, len(pairs),
             len(rejects), out)
    if not results:
        log.error("no input could be scored; see %s", out / "rejects.jsonl")
        return 1
    return 0
