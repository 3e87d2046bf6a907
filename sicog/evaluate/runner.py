"""Evaluate a model on the mini world's held-out benchmarks: predictions, skips, scores, summary.

Layout of an evaluation folder (`--out`):

    run.json                   model, world, split and config version of this folder
    predictions/<bench>.jsonl  one line per evaluated record: id, prompt, prediction, gold, version, ...
    rejects/<bench>.jsonl      one line per skipped record: id, reason
    scores.json                per benchmark: counts, skips by reason, the world's scores
    summary.txt                one line

`images="shuffled"` is the blind control: every record is shown the image of another record of
the same benchmark (a fixed derangement over the distinct images) and scored against its own gold.
A model that reads the image drops towards chance; one that answers from the text alone does not.

Predictions are appended (and flushed) per batch, so a killed run resumes where it stopped: done
and rejected ids are skipped. Delete a rejects file to retry its records.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import torch
from tqdm import tqdm

from sicog.data.checks import InputError
from sicog.data.records import JsonlAppender, atomic_write_text, iter_records, read_records, record_id, write_json
from sicog.evaluate.generation import GreedyGenerator, RecordError
from sicog.evaluate.prompts import eval_prompt, question_type
from sicog.evaluate.scorers import score_benchmark
from sicog.evaluate.settings import BENCHMARKS, EvalConfig

log = logging.getLogger(__name__)

# Record fields copied into each prediction line so that the file can be read on its own.
_KEPT_FIELDS = ("image", "skill", "type", "variant", "options")


def benchmark_file(world: Path, split: str, benchmark: str) -> Path:
    return Path(world) / "data" / split / f"{benchmark}.jsonl"


def gold_of(record: dict, benchmark: str):
    """The reference kept beside a prediction: the answer, or for captions the scene graph."""
    if benchmark == "captions":
        return record.get("scene")
    return record.get("answer")


def _check_run_identity(out: Path, identity: dict) -> None:
    """Refuse to mix predictions of another model, world, split or config version in one folder."""
    path = out / "run.json"
    if path.exists():
        previous = json.loads(path.read_text())
        previous.setdefault("images", "true")  # folders written before the blind control existed
        previous.setdefault("precision", "fp32")  # folders written before the precision setting
        diff = {k: (previous.get(k), v) for k, v in identity.items() if previous.get(k) != v}
        if diff:
            raise InputError(
                f"--out {out} holds an evaluation of another run ({diff}); use a new --out or delete that folder"
            )
    else:
        write_json(path, identity)


IMAGE_MODES = ("true", "shuffled")


def shuffled_images(records: list[tuple[str, dict]]) -> dict[str, str]:
    """{image: another image} over the records' distinct images: each sent half-way round the sorted list."""
    images = sorted({r["image"] for _, r in records if r.get("image")})
    if len(images) < 2:
        raise ValueError(f"shuffled images need at least 2 distinct images, found {len(images)}")
    shift = len(images) // 2
    return {im: images[(i + shift) % len(images)] for i, im in enumerate(images)}


def _predict_benchmark(gen: GreedyGenerator, world: Path, out: Path, benchmark: str,
                       records: list[tuple[str, dict]], image_map: dict[str, str] | None = None) -> None:
    cfg = gen.cfg
    with JsonlAppender(out / "predictions" / f"{benchmark}.jsonl") as preds, \
            JsonlAppender(out / "rejects" / f"{benchmark}.jsonl") as rejects:
        done = preds.done_ids | rejects.done_ids
        todo = [(rid, r) for rid, r in records if rid not in done]
        if len(todo) < len(records):
            log.info("%s: %d of %d records already done, resuming", benchmark, len(records) - len(todo), len(records))
        bar = tqdm(total=len(todo), desc=f"evaluate {benchmark}", unit="rec")
        batch: list[tuple[str, dict, str, dict]] = []

        def flush() -> None:
            if not batch:
                return
            texts = gen.generate([item for *_, item in batch], benchmark)
            for (rid, rec, prompt, _), text in zip(batch, texts):
                line = {"id": rid, "prompt": prompt, "prediction": text, "gold": gold_of(rec, benchmark),
                        "version": cfg.version}
                line.update({k: rec[k] for k in _KEPT_FIELDS if k in rec})
                preds.write(line)
            bar.update(len(batch))
            batch.clear()

        for rid, rec in todo:
            try:
                prompt = eval_prompt(rec, benchmark, cfg)
                if not rec.get("image"):
                    raise RecordError("missing image", "record has no image field")
                shown = image_map[rec["image"]] if image_map is not None else rec["image"]
                item = gen.encode(prompt, gen.load_image(world / shown))
            except ValueError as e:  # RecordError, or a malformed record (bad options, no question)
                reason, detail = (e.category, e.detail) if isinstance(e, RecordError) else ("bad record", str(e))
                rejects.write({"id": rid, "reason": reason, "detail": detail, "version": cfg.version})
                log.warning("%s: skipped %s (%s: %s)", benchmark, rid, reason, detail)
                bar.update(1)
                continue
            batch.append((rid, rec, prompt, item))
            if len(batch) >= cfg.batch_size:
                flush()
        flush()
        bar.close()


def _keyed_records(records: list[dict], benchmark: str) -> tuple[list[tuple[str, dict]], list[str]]:
    """(id, record) pairs, first occurrence of each id; the ids repeated later are returned to be reported."""
    seen: set[str] = set()
    kept, repeated = [], []
    for i, r in enumerate(records):
        rid = record_id(r, i)
        if rid in seen:
            repeated.append(rid)
            continue
        seen.add(rid)
        kept.append((rid, r))
    if repeated:
        log.warning("%s: %d repeated ids ignored: %s", benchmark, len(repeated), repeated[:5])
    return kept, repeated


def _benchmark_files(world: Path, split: str, benchmarks: tuple[str, ...], images: str) -> dict[str, Path]:
    """Each benchmark's record file in the world, after checking the benchmark names and image mode."""
    unknown = [b for b in benchmarks if b not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmarks {unknown}; choose from {list(BENCHMARKS)}")
    if images not in IMAGE_MODES:
        raise ValueError(f"images must be one of {IMAGE_MODES}, got {images!r}")
    files = {b: benchmark_file(world, split, b) for b in benchmarks}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise InputError(f"--world {world}: benchmark files not found: {missing} (is it a built world?)")
    return files


def _benchmark_entry(world: Path, out: Path, split: str, benchmark: str, records: list[tuple[str, dict]],
                     repeated: list[str]) -> dict:
    """The counts and scores of one benchmark, from its predictions and rejects of these records."""
    by_id = dict(records)
    predictions = [p for p in iter_records(out / "predictions" / f"{benchmark}.jsonl") if p["id"] in by_id]
    rejects = [r for r in iter_records(out / "rejects" / f"{benchmark}.jsonl") if r["id"] in by_id]
    scored_records = [by_id[p["id"]] for p in predictions]
    entry = {
        "records": len(records),
        "evaluated": len(predictions),
        "skipped": len(rejects),
        "skipped_by_reason": dict(Counter(r["reason"] for r in rejects)),
        "repeated_ids_ignored": len(repeated),
        "scores": score_benchmark(world, split, benchmark, scored_records, predictions),
    }
    if benchmark == "qa":
        entry["question_types"] = dict(Counter(question_type(r, "qa") for r in scored_records))
    return entry


def evaluate(
    model,
    processor,
    world: str | Path,
    out: str | Path,
    cfg: EvalConfig,
    *,
    split: str = "eval",
    benchmarks: tuple[str, ...] = BENCHMARKS,
    limit: int | None = None,
    model_name: str = "in-memory",
    device: str | None = None,
    images: str = "true",
    precision: str = "fp32",
) -> dict:
    """Run, resume and score; returns the scores dict also written to `out/scores.json`.

    `precision`: fp32, or bf16 (autocast over the model's weights, sicog.model.precision); a folder
    holds predictions of one precision only.
    """
    world, out = Path(world), Path(out)
    files = _benchmark_files(world, split, benchmarks, images)
    out.mkdir(parents=True, exist_ok=True)
    _check_run_identity(out, {"model": model_name, "world": str(world.resolve()), "split": split,
                              "version": cfg.version, "images": images, "precision": precision})
    gen = GreedyGenerator(model, processor, cfg, device=device, precision=precision)
    result = {"version": cfg.version, "split": split, "model": model_name, "world": str(world),
              "limit": limit, "images": images, "long_side": gen.long_side, "precision": precision, "benchmarks": {}}
    for benchmark in benchmarks:
        records, repeated = _keyed_records(read_records(files[benchmark]), benchmark)
        image_map = shuffled_images(records) if images == "shuffled" else None  # over the whole benchmark
        if limit is not None:
            records = records[:limit]
        _predict_benchmark(gen, world, out, benchmark, records, image_map)
        entry = _benchmark_entry(world, out, split, benchmark, records, repeated)
        result["benchmarks"][benchmark] = entry
        log.info("%s: %d evaluated, %d skipped", benchmark, entry["evaluated"], entry["skipped"])
    result["new_tokens_per_second"] = round(gen.throughput(), 2)
    log.info("generated %d new tokens at %.1f tokens/s (precision %s, %d torch threads)", gen.new_tokens,
             gen.throughput(), precision, torch.get_num_threads())
    write_json(out / "scores.json", result)
    line = summary_line(result)
    atomic_write_text(out / "summary.txt", line + "\n")
    return result


def _fmt(x) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def summary_line(result: dict) -> str:
    """One line: version, split, model, each benchmark's headline scores, and the skip count."""
    shown = "" if result.get("images", "true") == "true" else f" images={result['images']}"
    parts = [f"[eval {result['version']}] split={result['split']}{shown} model={result['model']}"]
    skipped = 0
    for benchmark, entry in result["benchmarks"].items():
        headline = entry["scores"].get("headline", {})
        shown = " ".join(f"{k}={_fmt(v)}" for k, v in headline.items())
        parts.append(f"{benchmark}: {shown} (n={entry['evaluated']})")
        skipped += entry["skipped"]
    parts.append(f"skipped={skipped}")
    return " | ".join(parts)
