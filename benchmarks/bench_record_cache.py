"""Start-up time of the record checks for N synthetic records: no cache (every start before the
cache), a cold start (checks + writing the cache) and a cached start (reading it), side by side.

The records are LLaVA-style (an image question with a caption-length answer, one in ten text-only)
over 500 PNG images of varied sizes and aspect ratios (so some are sliced), checked with the tiny
tier's processor; each record's image header is opened as in a real run (the OS file cache is warm
after the first pass, so on a shared filesystem the uncached figures are larger).

    python benchmarks/bench_record_cache.py                  # 100,000 records (a minute or two on 2 cores)
    python benchmarks/bench_record_cache.py --records 10000  # quicker
"""
from __future__ import annotations

import argparse
import sys
import json
import logging
import random
import tempfile
import time
from pathlib import Path

from PIL import Image


def make_records(root: Path, n: int, n_images: int = 500, seed: int = 0) -> Path:
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True)
    for i in range(n_images):
        w, h = rng.randint(60, 400), rng.randint(60, 400)
        Image.new("RGB", (w, h), (rng.randrange(256), 90, 160)).save(root / "images" / f"{i}.png")
    words = "a red square sits left of the blue circle on a grey background with a printed letter".split()
    with (root / "data.jsonl").open("w") as f:
        for i in range(n):
            answer = " ".join(rng.choice(words) for _ in range(rng.randint(20, 120)))
            rec = {"id": f"r{i}", "conversations": [{"from": "human", "value": "Describe the image."},
                                                    {"from": "gpt", "value": answer}]}
            if i % 10:
                rec["image"] = f"images/{rng.randrange(n_images)}.png"
                rec["conversations"][0]["value"] = "<image>\n" + rec["conversations"][0]["value"]
            f.write(json.dumps(rec) + "\n")
    return root / "data.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    from sicog.data.dataset import prepare_samples
    from sicog.data.mixture import load_data
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny-model fixtures
    from tiny_models import build_random_tiny  # noqa: E402

    _, processor = build_random_tiny(seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_records(tmp / "world", args.records)
        entries = load_data(data)
        cache = tmp / "cache"
        times = {}
        for name, cache_dir in (("no cache", None), ("cold (check + write)", cache), ("cached", cache)):
            t0 = time.perf_counter()
            samples = prepare_samples(entries, processor, 4096, progress=False, cache_dir=cache_dir)
            times[name] = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in cache.glob("*.json"))
    n = args.records
    print(f"record checks at start-up, {n:,} records ({len(samples):,} usable), tiny-tier processor, 1 process")
    print(f"{'':<22}{'seconds':>9}{'ms/record':>11}")
    for name, t in times.items():
        print(f"{name:<22}{t:>9.2f}{1000 * t / n:>11.4f}")
    print(f"cached start is {times['no cache'] / times['cached']:.1f}x faster than no cache; "
          f"cache file {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
