"""`sicog annotate-cod`: rewrite captioned records into CoD captions through a teacher model.

Input: LLaVA-style records (JSON list or JSONL) with an `image` path relative to --image-folder, a
question (a `question` field, else the first human turn without `<image>`) and an original caption
(a `caption` field as in ALLaVA, else the first gpt turn). Each record is sent to an
OpenAI-compatible chat-completions endpoint with the image as a data URL (--base-url, else
$OPENAI_BASE_URL, key from $OPENAI_API_KEY); --world-teacher WORLD_DIR serves the mini world's teacher
in this process instead, so the mini world's stage 0 runs through the same client.

Files (the per-id progress and failures files make the run resumable after a kill):

  OUTPUT_COD_DIR/annotate_progress.jsonl  one line per annotated id, appended as answers arrive:
                                          {"id", "cod": <CoD record>, "usage", "attempts"}
  OUTPUT_COD_DIR/annotate_failures.jsonl  one line per id that finally failed, with the reason
                                          (reason, status_code, error_class, message, attempts)
  OUTPUT_COD_DIR/cod.jsonl                CoD records in input order (rewritten atomically at the end):
                                          `<image>\n` + question + COD_ANNOTATION_SUFFIX, the caption in
                                          the exact five-step layout
  OUTPUT_DD_DIR/dd.jsonl                  DD records in input order (same): the question without the
                                          step-by-step suffix, the caption's step-5 body
  OUTPUT_COD_DIR/annotate_summary.json    counts, token usage and estimated cost

A rerun skips every id already in the progress file or the failures file; with --retry-failures the
ids in the failures file are attempted again: their old lines move to
OUTPUT_COD_DIR/annotate_retried_failures.jsonl first (kept for their reasons and token cost), so
that every record is in exactly one of progress and failures. Records without an image file,
question or caption go to the failures file without an API call. Input ids must be unique.

This module is the command: its flags, the teacher client, the requests in flight and the summary.
What it reads and writes per record, and those files, are `sicog.annotate.cod_records`.
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from sicog.annotate.client import RetryPolicy, TeacherClient, TeacherFailed, TeacherRejected, Usage, mask_url
from sicog.annotate.cod_records import (
    COD_FILE,
    DD_FILE,
    FAILURES_FILE,
    PROGRESS_FILE,
    RETRIED_FILE,
    SUMMARY_FILE,
    Item,
    accept_cod,
    cod_record,
    failure_line,
    load_items,
    move_failures,
    write_outputs,
)
from sicog.annotate.media import image_data_url
from sicog.annotate.prompts import CodRequest
from sicog.data.checks import InputError, add_flag, check_input_dir, check_output_dir, check_world
from sicog.data.output_lock import OutputLock
from sicog.data.records import JsonlAppender, write_json

log = logging.getLogger(__name__)

# gpt-4o list prices, USD per 1M tokens.
DEFAULT_PRICE_INPUT = 2.50
DEFAULT_PRICE_OUTPUT = 10.00


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="records with image, question and caption (JSON or JSONL)")
    add_flag(parser, "--image-folder", "--image-dir", help="folder the records' image paths are relative to (required)")
    parser.add_argument("--output-cod-dir", required=True, help="CoD records, progress, failures and summary")
    parser.add_argument("--output-dd-dir", required=True, help="DD records (step-5 bodies)")
    add_flag(parser, "--teacher", "--model", default="gpt-4o", help="the teacher model's name at the endpoint")
    parser.add_argument("--base-url", default=None, help="endpoint; default $OPENAI_BASE_URL, else the OpenAI API")
    parser.add_argument("--world-teacher", metavar="WORLD_DIR", default=None,
                        help="serve the mini world's teacher in this process on a free loopback port and annotate "
                             "against it (instead of --base-url; no API key needed)")
    parser.add_argument("--temperature", type=float, default=0.2)
    add_flag(parser, "--max-new-tokens", "--max-tokens", type=int, default=2048,
             help="longest answer, in tokens (the request's max_tokens)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--max-attempts", type=int, default=6, help="attempts per record, first one included")
    parser.add_argument("--backoff-base", type=float, default=1.0, help="first backoff delay in seconds")
    parser.add_argument("--backoff-cap", type=float, default=60.0, help="longest backoff delay in seconds")
    parser.add_argument("--retry-after-cap", type=float, default=120.0, help="longest Retry-After honoured, seconds")
    parser.add_argument("--retry-failures", action="store_true", help="attempt the ids in the failures file again")
    parser.add_argument("--price-input", type=float, default=DEFAULT_PRICE_INPUT, help="USD per 1M input tokens")
    parser.add_argument("--price-output", type=float, default=DEFAULT_PRICE_OUTPUT, help="USD per 1M output tokens")
    parser.add_argument("--seed", type=int, default=0, help="seed of the backoff jitter")
    parser.add_argument("--system-prompt-file", default=None,
                        help="UTF-8 file with the teacher's system prompt (default: this project's wording)")
    parser.add_argument("--prefill-file", default=None,
                        help="UTF-8 file with an assistant turn sent after the user turn (default: none)")
    parser.add_argument("--user-template-file", default=None,
                        help="UTF-8 file with the user text, {question} and {caption} filled in "
                             "(default: 'Question: {question}\\n\\nOriginal description: {caption}')")


def annotate_item(item: Item, image_dir: Path, client: TeacherClient,
                  request: CodRequest | None = None) -> tuple[str, dict]:
    """("ok", progress line) or ("failed", failure line). Raises TeacherRejected on 401/403."""
    if item.image is None:
        return "failed", failure_line(item, "no image", "the record has no image path")
    if item.question is None:
        return "failed", failure_line(item, "no question", "the record has no question")
    if item.caption is None:
        return "failed", failure_line(item, "no caption", "the record has no caption to revise")
    try:
        url = image_data_url(image_dir / item.image)
    except FileNotFoundError:
        return "failed", failure_line(item, "missing image", f"image not found: {item.image}")
    except (OSError, ValueError) as e:
        return "failed", failure_line(item, "unreadable image", f"{type(e).__name__}: {e}")
    try:
        done = client.complete((request or CodRequest()).messages(item.question, item.caption, url), accept_cod)
    except TeacherFailed as e:
        return "failed", failure_line(item, e.error.reason, e.error.message, status_code=e.error.status_code,
                                  error_class=e.error.error_class, attempts=e.attempts, usage=e.usage)
    line = {"id": item.id, "cod": cod_record(item, done.text), "usage": done.usage.as_dict(), "attempts": done.attempts}
    return "ok", line


@dataclass
class RunStats:
    annotated: int = 0
    failed: int = 0
    api_attempts: int = 0
    usage: Usage = field(default_factory=Usage)
    rejected: TeacherRejected | None = None


def annotate_all(todo: list[Item], image_dir: Path, client: TeacherClient, progress: JsonlAppender,
                 failures: JsonlAppender, concurrency: int, request: CodRequest | None = None) -> RunStats:
    """Annotate `todo` with `concurrency` requests in flight, appending each outcome as it arrives.

    Only this thread writes; at most 2 x concurrency items are queued at a time. On 401/403 no new
    item is started and the stats carry the rejection.
    """
    stats = RunStats()
    queue = iter(todo)
    in_flight: set[Future] = set()
    with ThreadPoolExecutor(max_workers=concurrency) as pool, \
            tqdm(total=len(todo), desc="annotate-cod", unit="rec") as bar:

        def fill() -> None:
            while stats.rejected is None and len(in_flight) < 2 * concurrency:
                item = next(queue, None)
                if item is None:
                    return
                in_flight.add(pool.submit(annotate_item, item, image_dir, client, request))

        try:
            fill()
            while in_flight:
                finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    try:
                        status, line = future.result()
                    except TeacherRejected as e:
                        stats.rejected = stats.rejected or e
                        continue
                    stats.usage.add(Usage(**line["usage"]))
                    stats.api_attempts += line["attempts"]
                    if status == "ok":
                        progress.write(line)
                        stats.annotated += 1
                    else:
                        failures.write(line)
                        stats.failed += 1
                    bar.update(1)
                    bar.set_postfix(failed=stats.failed, api_calls=stats.api_attempts)
                fill()
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            log.warning("interrupted: finished records are saved; rerun the same command to resume")
            raise
    return stats


def run(args: argparse.Namespace) -> int:
    if args.world_teacher:
        from sicog.world.teacher import start_teacher

        world = check_world(args.world_teacher, "--world-teacher")
        server = start_teacher(world)
        log.info("serving the world teacher of %s at %s", world, server.url)
        try:
            return annotate(args, base_url=server.url, api_key=os.environ.get("OPENAI_API_KEY") or "world-teacher")
        finally:
            server.stop()
    api_key = os.environ.get("OPENAI_API_KEY", "")
    if not api_key:
        raise InputError("OPENAI_API_KEY is not set: export the key of the teacher endpoint")
    return annotate(args, base_url=args.base_url or os.environ.get("OPENAI_BASE_URL") or None, api_key=api_key)


def annotate(args: argparse.Namespace, base_url: str | None, api_key: str) -> int:
    if args.concurrency < 1:
        raise InputError(f"--concurrency {args.concurrency}: must be at least 1")
    if args.max_attempts < 1:
        raise InputError(f"--max-attempts {args.max_attempts}: must be at least 1")
    if not args.timeout > 0:
        raise InputError(f"--timeout {args.timeout}: must be a positive number of seconds")
    what = "the folder the records' image paths are relative to"
    if args.image_folder is None:
        raise InputError(f"--image-folder is required: {what}")
    image_dir = check_input_dir(args.image_folder, "--image-folder", what)
    try:
        request = CodRequest.from_files(args.system_prompt_file, args.prefill_file, args.user_template_file)
    except ValueError as e:
        raise InputError(f"teacher request: {e}") from None
    items = load_items(args.input)
    cod_dir = check_output_dir(args.output_cod_dir, "--output-cod-dir")
    dd_dir = check_output_dir(args.output_dd_dir, "--output-dd-dir")
    # one writer per output: a second run would pay the API twice and write every id twice
    with OutputLock(cod_dir, "--output-cod-dir"):
        if dd_dir.resolve() == cod_dir.resolve():
            return _annotate(args, base_url, api_key, items, image_dir, cod_dir, dd_dir, request)
        with OutputLock(dd_dir, "--output-dd-dir"):
            return _annotate(args, base_url, api_key, items, image_dir, cod_dir, dd_dir, request)


def _annotate(args: argparse.Namespace, base_url: str | None, api_key: str, items: list[Item], image_dir: Path,
              cod_dir: Path, dd_dir: Path, request: CodRequest) -> int:
    progress_path, failures_path = cod_dir / PROGRESS_FILE, cod_dir / FAILURES_FILE
    if args.retry_failures:
        moved = move_failures(failures_path, cod_dir / RETRIED_FILE, {item.id for item in items})
        log.info("retrying %d earlier failures", moved)
    client = TeacherClient(
        model=args.teacher,
        api_key=api_key,
        base_url=base_url,
        temperature=args.temperature,
        max_tokens=args.max_new_tokens,
        timeout=args.timeout,
        policy=RetryPolicy(args.max_attempts, args.backoff_base, args.backoff_cap, args.retry_after_cap),
        seed=args.seed,
    )
    for name in ("httpx", "httpx2"):  # one INFO line per request would bury the progress bar
        logging.getLogger(name).setLevel(logging.WARNING)
    log.info("annotating with model %s at %s", args.teacher, mask_url(client.base_url) or "the OpenAI API")

    started = time.monotonic()
    with JsonlAppender(progress_path) as progress, JsonlAppender(failures_path) as failures:
        done = progress.done_ids | failures.done_ids
        todo = [item for item in items if item.id not in done]
        log.info("%d records, %d already done, %d to annotate", len(items), len(items) - len(todo), len(todo))
        stats = annotate_all(todo, image_dir, client, progress, failures, args.concurrency, request)
    wall = time.monotonic() - started

    cods, n_failed, total_usage = write_outputs(items, cod_dir, dd_dir)
    summary = _summary(args, items, len(cods), n_failed, stats, wall, total_usage, cod_dir, dd_dir)
    write_json(cod_dir / SUMMARY_FILE, summary)
    log.info("annotated %d, failed %d, pending %d; %d+%d tokens this run (~$%.4f)", summary["annotated"],
             summary["failed"], summary["pending"], stats.usage.prompt_tokens, stats.usage.completion_tokens,
             summary["this_run"]["estimated_cost_usd"])
    if stats.rejected is not None:
        log.error("the endpoint refused the request (%s); check OPENAI_API_KEY and the model name. "
                  "%d records are left for a rerun", stats.rejected, summary["pending"])
        return 1
    if not cods:
        log.error("no record was annotated: all %d failed (reasons in %s); fix the cause and rerun with "
                  "--retry-failures", n_failed, cod_dir / FAILURES_FILE)
        return 1
    return 0


def _summary(args: argparse.Namespace, items: list[Item], n_annotated: int, n_failed: int, stats: RunStats,
             wall: float, total_usage: Usage, cod_dir: Path, dd_dir: Path) -> dict:
    """annotate_summary.json: counts, this run's and all runs' tokens and estimated cost, the files."""
    price = (args.price_input, args.price_output)
    return {
        "model": args.teacher,
        "input": str(args.input),
        "records": len(items),
        "annotated": n_annotated,
        "failed": n_failed,
        "pending": len(items) - n_annotated - n_failed,
        "this_run": {
            "annotated": stats.annotated,
            "failed": stats.failed,
            "api_attempts": stats.api_attempts,
            **stats.usage.as_dict(),
            "estimated_cost_usd": round(stats.usage.cost(*price), 6),
            "wall_s": round(wall, 3),
            "records_per_s": round((stats.annotated + stats.failed) / wall, 3) if wall > 0 else None,
        },
        "total": {**total_usage.as_dict(), "estimated_cost_usd": round(total_usage.cost(*price), 6)},
        "price_usd_per_1m_tokens": {"input": args.price_input, "output": args.price_output},
        "files": {
            "cod": str(cod_dir / COD_FILE),
            "dd": str(dd_dir / DD_FILE),
            "progress": str(cod_dir / PROGRESS_FILE),
            "failures": str(cod_dir / FAILURES_FILE),
            "retried_failures": str(cod_dir / RETRIED_FILE),
        },
    }
