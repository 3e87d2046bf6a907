"""`sicog merge-candidates`: check the per-rank shards against the input and merge them in input order.

Every unique input id (of the chunk, when `--chunk` is given) must appear exactly once across the
candidate shards and their rejects files; later occurrences of a repeated input id are added to
the rejects here. A missing, duplicated or unknown id is an error that names the ids. The
candidates file and the rejects file are written atomically. From the command, every such problem
is a bad input (`InputError`): one line naming the argument, exit status 2.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import time
from collections import Counter
from pathlib import Path

from sicog.data.checks import InputError, check_output_file
from sicog.data.output_lock import OutputLock
from sicog.data.records import dumps, read_appended, read_input_records, write_jsonl
from sicog.generate.inputs import split_jobs
from sicog.generate.shard import Chunk, rejects_path

log = logging.getLogger("sicog.merge")


class MergeError(Exception):
    pass


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inputs", required=True, help="the input records given to `sicog generate --data`")
    p.add_argument("--shards", required=True,
                   help="glob of the candidate shards, e.g. 'runs/x/captions.jsonl.rank*-of-*.jsonl'")
    p.add_argument("--out", required=True, help="merged candidates (JSONL, input order)")
    p.add_argument("--rejects-out", help="merged rejects (default: OUT with .rejects.jsonl)")
    p.add_argument("--chunk", default="", help="the i/k chunk the shards were generated for")
    p.add_argument("--wait", type=float, default=0.0,
                   help="seconds to keep polling while ids are missing (other nodes still writing)")
    p.add_argument("--poll", type=float, default=15.0, help="seconds between polls with --wait")


def _read_lines(path: Path) -> list[dict]:
    """Records of a JSONL shard; a partial last line (a writer still running or killed) is ignored."""
    try:
        records = read_appended(path, strict=True)
    except ValueError as e:
        raise MergeError(str(e)) from None
    for rec in records:
        if rec.get("id") is None:
            raise MergeError(f"{path}: a record without an id: {dumps(rec)[:200]}")
    return records


def _ids_text(ids: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f" ... ({len(ids)} in all)" if len(ids) > limit else "")


def collect(shard_pattern: str) -> tuple[list[tuple[Path, dict]], list[tuple[Path, dict]]]:
    """(candidate lines, reject lines) from the shards matching the glob and their rejects files."""
    paths = sorted(Path(p) for p in glob.glob(shard_pattern))
    shards = [p for p in paths if not p.name.endswith(".rejects.jsonl")]
    if not shards:
        raise MergeError(f"no candidate shards match {shard_pattern!r}")
    cands, rejects = [], []
    for shard in shards:
        cands += [(shard, r) for r in _read_lines(shard)]
        rp = rejects_path(shard)
        if rp.exists():
            rejects += [(rp, r) for r in _read_lines(rp)]
    return cands, rejects


def check(records: list[dict], chunk: Chunk, cands, rejects) -> tuple[list[dict], list[dict], list[str]]:
    """(candidates in input order, rejects in input order, missing ids); raises on duplicates or unknown ids."""
    jobs, duplicates = split_jobs(records)
    expected = [j for j in jobs if chunk.contains(j.rid)]
    expected_ids = {j.rid for j in expected}
    seen = Counter(str(r["id"]) for _, r in cands + rejects)
    dup = sorted(i for i, c in seen.items() if c > 1)
    if dup:
        where = sorted({str(p) for p, r in cands + rejects if str(r["id"]) in set(dup)})
        raise MergeError(f"{len(dup)} id(s) appear more than once across the shards: {_ids_text(dup)} "
                         f"(in {', '.join(where)})")
    unknown = sorted(set(seen) - expected_ids)
    if unknown:
        raise MergeError(f"{len(unknown)} id(s) in the shards are not inputs of this file/chunk: {_ids_text(unknown)}")
    metas = {json.dumps({k: v for k, v in r.get("generation", {}).items() if k != "augment"}, sort_keys=True)
             for _, r in cands}
    if len(metas) > 1:
        raise MergeError(f"the shards were generated with different settings: {sorted(metas)}")
    for p, r in cands:
        c = r.get("candidates")
        if not isinstance(c, list) or not c or not all(isinstance(x, str) for x in c):
            raise MergeError(f"{p}: id {r['id']!r} has no list of candidate strings")
    by_id = {str(r["id"]): r for _, r in cands}
    rej_by_id = {str(r["id"]): r for _, r in rejects}
    missing = [j.rid for j in expected if j.rid not in by_id and j.rid not in rej_by_id]
    merged = [by_id[j.rid] for j in expected if j.rid in by_id]
    dup_rejects = [d for d in duplicates if chunk.contains(d.job.rid)]
    all_rejects = [rej_by_id[j.rid] for j in expected if j.rid in rej_by_id] + [d.as_record() for d in dup_rejects]
    all_rejects.sort(key=lambda r: r.get("index", 0))
    return merged, all_rejects, missing


def merge(inputs: str, shards: str, out: str, rejects_out: str | None = None, chunk: Chunk = Chunk(),
          wait: float = 0.0, poll: float = 15.0) -> tuple[int, int]:
    records = read_input_records(inputs, "--inputs")
    deadline = time.monotonic() + wait
    while True:
        merged, rejects, missing = check(records, chunk, *collect(shards))
        if not missing:
            break
        if time.monotonic() >= deadline:
            raise MergeError(f"{len(missing)} input id(s) are in no shard and no rejects file: {_ids_text(missing)} "
                             f"(a rank has not finished or was killed: rerun `sicog generate` with the same "
                             f"arguments to complete it)")
        log.info("%d ids still missing; polling again in %.0fs", len(missing), poll)
        time.sleep(poll)
    write_jsonl(out, merged)
    rpath = Path(rejects_out) if rejects_out else rejects_path(out)
    write_jsonl(rpath, rejects)
    reasons = Counter(r["reason"].split(":")[0].split(" (")[0] for r in rejects)
    log.info("merged %d inputs with candidates into %s; %d rejects into %s %s",
             len(merged), out, len(rejects), rpath, dict(reasons) if reasons else "")
    return len(merged), len(rejects)


def run(args) -> int:
    out = check_output_file(args.out, "--out")
    if args.rejects_out:
        check_output_file(args.rejects_out, "--rejects-out")
    try:
        chunk = Chunk.parse(args.chunk)
    except ValueError as e:
        raise InputError(f"--chunk: {e}") from None
    for name in ("wait", "poll"):
        if getattr(args, name) < 0:
            raise InputError(f"--{name} must be >= 0")
    with OutputLock(out, "--out", folder=False):
        try:
            merge(args.inputs, args.shards, args.out, args.rejects_out, chunk, args.wait, args.poll)
        except (MergeError, FileNotFoundError) as e:  # shards that do not match the inputs, or vanished
            raise InputError(f"--shards: {e}") from None
    return 0
