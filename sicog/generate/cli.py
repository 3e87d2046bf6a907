"""`sicog generate`: N candidate captions or answers per input, one shard per rank, resumable.

Each rank of a `torchrun` job (or the single process) takes the ids of its shard and appends one
line per finished input to `OUT.rank{r}-of-{w}.jsonl`, and one line per unusable input to
`OUT.rank{r}-of-{w}.rejects.jsonl`. A rerun skips the ids already in any shard or rejects file
of OUT, so a killed run resumes with nothing lost and nothing duplicated (to retry rejected ids,
delete the rejects files). Ranks never communicate: no process group, no collective that a slow
rank could time out. `sicog merge-candidates` checks and merges the shards.
"""
from __future__ import annotations

import argparse
import glob
import logging
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from tqdm import tqdm

from sicog.data.checks import InputError, add_flag, check_input_dir, check_output_file
from sicog.data.output_lock import OutputLock
from sicog.data.records import JsonlAppender, read_appended, read_input_records
from sicog.generate.augment import parse_methods
from sicog.generate.engine import CandidateEngine
from sicog.generate.inputs import InputSpec, Prepared, Rejected, my_jobs, prepare, split_jobs
from sicog.generate.settings import AUGMENT_METHODS, SamplingSettings, shell_defaults
from sicog.generate.shard import Chunk, rejects_path, shard_glob, shard_path
from sicog.model.precision import DTYPES, default_precision, dtype_named, resolve_precision
from sicog.runtime import rank_info, resolve_device

log = logging.getLogger("sicog.generate")

PROMPTS = {"caption": ("cod-default", "default", "cod-conv"), "reasoning": ("cot-default", "default")}
DEFAULT_PROMPT = {"caption": "cod-default", "reasoning": "cot-default"}


class _PrintDefaults(argparse.Action):
    """`--print-defaults`: the sampling defaults as shell lines, then exit (no other flag needed)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        sys.stdout.write(shell_defaults())
        parser.exit()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="SICOG model folder (save_pretrained output)")
    p.add_argument("--data", required=True, help="LLaVA-format input records (JSON list or JSONL)")
    p.add_argument("--image-folder", required=True, help="folder the records' image paths are relative to")
    p.add_argument("--out", required=True, help="the candidates file merge-candidates will write; this command "
                                                "writes OUT.rank{r}-of-{w}.jsonl and OUT.rank{r}-of-{w}.rejects.jsonl")
    p.add_argument("--task", choices=("caption", "reasoning"), default="caption")
    p.add_argument("--prompt", help="caption: cod-default | default | cod-conv; reasoning: cot-default | default "
                                    "(default: cod-default / cot-default)")
    d = SamplingSettings()
    p.add_argument("--print-defaults", action=_PrintDefaults,
                   help="print the sampling defaults as shell lines (: \"${VAR:=value}\") and exit")
    p.add_argument("--num-candidates", type=int, default=d.num_candidates)
    p.add_argument("--temperature", type=float, default=d.temperature, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=d.top_p)
    p.add_argument("--top-k", type=int, default=d.top_k, help="0 = off")
    p.add_argument("--num-beams", type=int, default=d.num_beams, help=">1 runs beam search through model.generate")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--min-new-tokens", type=int, default=d.min_new_tokens)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--batch-size", type=int, default=8, help="inputs per prefill (each expands to N candidate rows)")
    p.add_argument("--augment", default="", help=f"comma list of {','.join(AUGMENT_METHODS)}: "
                                                 "corrupt each image with one of them (seeded by id)")
    p.add_argument("--chunk", default="", help="only chunk i/k of the input ids (zero-based, by stable hash)")
    add_flag(p, "--model-max-length", "--max-length", type=int,
             help="longest prompt + new tokens (default: the LLM's max_position_embeddings)")
    p.add_argument("--device", default="auto", help="auto: cuda:LOCAL_RANK when CUDA is available, else cpu; "
                                                     "cuda: cuda:LOCAL_RANK; or an explicit device such as cuda:1")
    p.add_argument("--dtype", choices=("auto", *DTYPES), default="auto",
                   help="auto: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None,
                   help="compute precision: bf16 = autocast over the loaded weights (logits sampled in fp32); "
                        "auto: bf16 where the CPU/GPU has it natively, else fp32 (default: $SICOG_PRECISION, else auto)")
    p.add_argument("--prefetch", type=int, default=2, help="batches of images loaded ahead in a background thread")
    p.add_argument("--length-window", type=int, default=4,
                   help="batches' worth of inputs sorted by prompt length before batching (1 = input order)")


def settings_from_args(args) -> SamplingSettings:
    return SamplingSettings(
        num_candidates=args.num_candidates, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        num_beams=args.num_beams, max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens,
        seed=args.seed,
    )


def generation_meta(args, settings: SamplingSettings, prompt_name: str) -> dict:
    """The run's generation metadata (the per-record `augment` is added to it)."""
    return {
        "task": args.task, "prompt_name": prompt_name, "model": str(args.model),
        "temperature": settings.temperature, "top_p": settings.top_p, "top_k": settings.top_k,
        "num_beams": settings.num_beams, "max_new_tokens": settings.max_new_tokens,
        "min_new_tokens": settings.min_new_tokens, "num_candidates": settings.num_candidates, "seed": settings.seed,
    }


def done_ids(out: str, expected_meta: dict) -> set[str]:
    """Ids already written to any shard or rejects file of `out`; refuses shards made with other settings."""
    done: set[str] = set()
    for path in sorted(glob.glob(shard_glob(out))):
        for rec in read_appended(path):  # a partial last line from a killed writer: its id is redone
            meta = {k: v for k, v in (rec.get("generation") or {}).items() if k != "augment"}
            if "generation" in rec and meta != expected_meta:
                raise InputError(f"{path} was generated with other settings ({meta}) than this run "
                                 f"({expected_meta}); use another --out or delete the old shards")
            if rec.get("id") is not None:
                done.add(str(rec["id"]))
    return done


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    if spec == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return dtype_named(spec)


def load_model(path: str, device: torch.device, dtype: torch.dtype):
    from sicog.model.folder import load_model_folder

    model, processor = load_model_folder(path, "--model", dtype=dtype)
    return model.to(device).eval(), processor


def length_grouped(pool: list[Prepared], batch_size: int) -> list[list[Prepared]]:
    """Batches of similar prompt length (less padding in the prefill and in the expanded cache).

    Safe for determinism: a candidate depends on its own id and seed, not on its batch.
    """
    ordered = sorted(pool, key=lambda p: int(p.item["input_ids"].shape[-1]))
    return [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]


def _prepared_stream(jobs, spec, processor, lookahead: int):
    """prepare() over jobs in order, `lookahead` jobs ahead in a background thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        queue: deque = deque()
        it = iter(jobs)
        for job in it:
            queue.append(pool.submit(prepare, job, spec, processor))
            if len(queue) > lookahead:
                yield queue.popleft().result()
        while queue:
            yield queue.popleft().result()


def run(args) -> int:
    logging.getLogger().setLevel(logging.INFO)
    prompt_name = args.prompt or DEFAULT_PROMPT[args.task]
    try:
        settings = settings_from_args(args)
        augment = parse_methods(args.augment)
        chunk = Chunk.parse(args.chunk)
        info = rank_info()
        args.precision = args.precision or default_precision()
        if prompt_name not in PROMPTS[args.task]:
            raise ValueError(f"--prompt {prompt_name!r} is not a {args.task} prompt; use one of {PROMPTS[args.task]}")
        if args.batch_size < 1 or args.length_window < 1 or args.prefetch < 0:
            raise ValueError("--batch-size and --length-window must be >= 1, --prefetch >= 0")
    except ValueError as e:
        raise InputError(str(e)) from None
    check_input_dir(args.image_folder, "--image-folder", "the folder the records' image paths are relative to")
    records = read_input_records(args.data, "--data")
    check_output_file(args.out, "--out")
    # one writer per shard: a second run with the same --out and rank stops here, naming the first
    with OutputLock(args.out, "--out", folder=False, suffix=f".rank{info.rank}"):
        return _generate(args, records, settings, augment, chunk, info, prompt_name)


def _generate(args, records, settings, augment, chunk, info, prompt_name) -> int:
    meta = generation_meta(args, settings, prompt_name)
    jobs, duplicates = split_jobs(records)
    mine = my_jobs(jobs, info.rank, info.world_size, chunk)
    done = done_ids(args.out, meta)
    todo = [j for j in mine if j.rid not in done]
    out_path = shard_path(args.out, info.rank, info.world_size)
    if not todo:
        log.info("rank %d/%d: all %d inputs of this shard are already done (%s)", info.rank, info.world_size,
                 len(mine), out_path)
        return 0

    torch.manual_seed(args.seed)
    device = resolve_device(args.device, info.local_rank)
    model, processor = load_model(args.model, device, resolve_dtype(args.dtype, device))
    max_length = args.model_max_length or int(model.language_model.config.max_position_embeddings)
    spec = InputSpec(args.task, prompt_name, Path(args.image_folder), tuple(augment), args.seed, max_length,
                     settings.max_new_tokens)
    log.info("rank %d/%d on %s: %d of %d unique inputs are this shard's (chunk %s), %d already done, %d to do; "
             "%d duplicate ids left to merge-candidates; writing %s", info.rank, info.world_size, device, len(mine),
             len(jobs), chunk, len(mine) - len(todo), len(todo), len(duplicates), out_path)

    precision = resolve_precision(args.precision, device)
    log.info("rank %d/%d: precision %s, weights %s, %d torch threads", info.rank, info.world_size, precision,
             str(next(model.parameters()).dtype).removeprefix("torch."), torch.get_num_threads())
    engine = CandidateEngine(model, processor, settings, precision=precision)
    _write_candidates(args, engine, settings, processor, spec, todo, meta, out_path, info.rank)
    return 0


def _write_candidates(args, engine: CandidateEngine, settings: SamplingSettings, processor, spec: InputSpec,
                      todo: list, meta: dict, out_path: Path, rank: int) -> None:
    """Generate the candidates of `todo` in length-grouped batches, appending each record to the shard
    (and each input that could not be prepared to its rejects file) as its batch finishes."""
    start, n_cand, n_tok, n_rej = time.perf_counter(), 0, 0, 0
    with JsonlAppender(out_path) as out, JsonlAppender(rejects_path(out_path)) as rejects, \
            tqdm(total=len(todo), desc=f"generate r{rank}", unit="input", dynamic_ncols=True) as bar:

        def flush(batch: list[Prepared]) -> None:
            nonlocal n_cand, n_tok
            token_lists = engine.generate_ids([p.job.rid for p in batch], [p.item for p in batch])
            for p, cands in zip(batch, token_lists):
                rec = dict(p.job.record)
                rec.setdefault("id", p.job.rid)
                rec["prompt"], rec["candidates"] = p.prompt, [engine.text(c) for c in cands]
                n_tok += sum(map(len, cands))
                rec["generation"] = {**meta, "augment": p.augment}
                out.write(rec)
            n_cand += len(batch) * settings.num_candidates
            bar.update(len(batch))
            elapsed = time.perf_counter() - start
            bar.set_postfix(cand_s=f"{n_cand / elapsed:.2f}", tok_s=f"{n_tok / elapsed:.1f}", rejects=n_rej)

        pool: list[Prepared] = []  # inputs waiting for a batch, grouped by prompt length
        window = args.batch_size * args.length_window
        for res in _prepared_stream(todo, spec, processor, lookahead=args.prefetch * args.batch_size):
            if isinstance(res, Rejected):
                rejects.write(res.as_record())
                n_rej += 1
                bar.update(1)
                continue
            pool.append(res)
            if len(pool) >= window:
                for batch in length_grouped(pool, args.batch_size):
                    flush(batch)
                pool = []
        for batch in length_grouped(pool, args.batch_size):
            flush(batch)
    elapsed = time.perf_counter() - start
    log.info("rank %d: %d candidates for %d inputs in %.1fs (%.2f candidates/s, %.1f new tokens/s), %d rejected",
             rank, n_cand, n_cand // settings.num_candidates, elapsed, n_cand / max(elapsed, 1e-9),
             n_tok / max(elapsed, 1e-9), n_rej)
