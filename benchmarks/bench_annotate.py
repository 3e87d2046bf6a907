"""CoD annotation throughput: `sicog annotate-cod` with concurrent requests against a sequential loop.

Both runs annotate the same --records records (the micro world's CoD seed records repeated under new
ids) through the world's teacher on loopback, every answer delayed by --latency seconds to stand in
for a remote model:

- annotate-cod: --concurrency requests in flight, retries with backoff;
- sequential: the same command with --concurrency 1, one request at a time, as a plain script
  calling the API in a loop would run.

A third run adds injected faults (rate limits with Retry-After, 500s, malformed bodies, captions with
a step missing) and reports how many records still end annotated. Prints records/s, the ratio and
the fault run's outcome.

    python benchmarks/bench_annotate.py [--records 96] [--latency 0.1] [--concurrency 8]
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from sicog.annotate import cod
from sicog.cli import main as sicog_main
from sicog.data.records import read_records, write_jsonl
from sicog.world.teacher import FaultConfig, start_teacher


def annotate(world: Path, records: Path, out: Path, concurrency: int, faults: FaultConfig) -> tuple[float, dict]:
    server = start_teacher(world, faults=faults)
    try:
        parser = argparse.ArgumentParser()
        cod.add_arguments(parser)
        args = parser.parse_args([
            "--input", str(records), "--image-folder", str(world),
            "--output-cod-dir", str(out / "cod"), "--output-dd-dir", str(out / "dd"),
            "--teacher", "sicog-world-teacher", "--concurrency", str(concurrency),
            "--backoff-base", "0.05", "--backoff-cap", "0.5", "--max-attempts", "8",
        ])
        start = time.perf_counter()
        rc = cod.annotate(args, base_url=server.url, api_key="benchmark")
        elapsed = time.perf_counter() - start
    finally:
        server.stop()
    if rc != 0:
        raise SystemExit(f"annotate-cod exited with {rc}")
    return elapsed, json.loads((out / "cod" / cod.SUMMARY_FILE).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=96)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the teacher waits per answer")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        assert sicog_main(["world", "build", "--out", str(root / "world"), "--size", "micro", "--seed", "0"]) == 0
        world = root / "world"
        seed = read_records(world / "data" / "cod_seed_raw.jsonl")
        records = root / "records.jsonl"
        write_jsonl(records, [{**seed[i % len(seed)], "id": f"bench-{i}"} for i in range(args.records)])
        slow = FaultConfig(delay=1.0, delay_s=args.latency)
        t_seq, s_seq = annotate(world, records, root / "seq", 1, slow)
        t_par, s_par = annotate(world, records, root / "par", args.concurrency, slow)
        faulty = FaultConfig(seed=1, delay=1.0, delay_s=args.latency, rate_limit=0.2, server_error=0.1,
                             malformed=0.05, wrong_format=0.1)
        t_flt, s_flt = annotate(world, records, root / "faults", args.concurrency, faulty)
    n = s_seq["records"]
    print(f"records: {n}, teacher latency {args.latency:.3f} s")
    print(f"sequential (concurrency 1): {n / t_seq:7.2f} records/s")
    print(f"annotate-cod (concurrency {args.concurrency}): {n / t_par:7.2f} records/s")
    print(f"ratio: {t_seq / t_par:.2f}x")
    print(f"with faults: {s_flt['annotated']}/{n} annotated, {s_flt['failed']} failed, "
          f"{s_flt['this_run']['api_attempts']} API calls, {n / t_flt:.2f} records/s")


if __name__ == "__main__":
    main()
