"""From input records to encoded generation inputs, or to a reject with its reason.

A record is rejected (never crashes the run, never turns into another record) when its id repeats
an earlier one, it has no image, the image is missing or unreadable, it gives no prompt (e.g. no
question), or the encoded prompt plus the token budget does not fit the model.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sicog.data.formats import generation_prompt
from sicog.data.records import record_id
from sicog.generate.settings import SamplingSettings
from sicog.generate.shard import Chunk, derive_seed, rank_of


@dataclass
class Job:
    """One input record with its position in the input file and its id."""

    index: int
    rid: str
    record: dict


@dataclass
class Prepared:
    job: Job
    prompt: str
    item: dict
    augment: str | None


@dataclass
class Rejected:
    job: Job
    reason: str

    def as_record(self) -> dict:
        return {"id": self.job.rid, "index": self.job.index, "reason": self.reason, "record": self.job.record}


def split_jobs(records: list[dict]) -> tuple[list[Job], list[Rejected]]:
    """Jobs in input order, and the later occurrences of repeated ids as rejects (the first one wins)."""
    jobs, duplicates, first = [], [], {}
    for i, rec in enumerate(records):
        job = Job(i, record_id(rec, i), rec)
        if job.rid in first:
            duplicates.append(Rejected(job, f"duplicate id (first at input index {first[job.rid]})"))
        else:
            first[job.rid] = i
            jobs.append(job)
    return jobs, duplicates


def my_jobs(jobs: list[Job], rank: int, world_size: int, chunk: Chunk = Chunk()) -> list[Job]:
    return [j for j in jobs if chunk.contains(j.rid) and rank_of(j.rid, world_size, chunk) == rank]


@dataclass(frozen=True)
class InputSpec:
    """How records become model inputs."""

    task: str
    prompt_name: str
    image_folder: Path
    augment_methods: tuple[str, ...] = ()
    seed: int = 0
    max_length: int = 4096
    max_new_tokens: int = SamplingSettings.max_new_tokens


def prepare(job: Job, spec: InputSpec, processor) -> Prepared | Rejected:
    rec = job.record
    try:
        prompt = generation_prompt(rec, spec.task, spec.prompt_name)
    except ValueError as e:
        return Rejected(job, f"no prompt: {e}")
    image_rel = rec.get("image")
    if not image_rel:
        return Rejected(job, "no image in record")
    if not isinstance(image_rel, str):
        return Rejected(job, f"image must be one relative path, got {type(image_rel).__name__}")
    path = spec.image_folder / image_rel
    if not path.is_file():
        return Rejected(job, f"image not found: {os.fspath(path)}")
    try:
        image = processor.load_image(path)
    except (ValueError, OSError) as e:
        return Rejected(job, f"unreadable image: {e}")
    method = None
    try:
        if spec.augment_methods:
            from sicog.generate.augment import choose_method, corrupt  # torchvision: only when corrupting

            method = choose_method(list(spec.augment_methods), spec.seed, job.rid)
            image = corrupt(image, method, derive_seed(spec.seed, job.rid, "augment"))
        item = processor.encode([{"from": "human", "value": prompt}], image=image,
                                add_generation_prompt=True, for_generation=True)
    except Exception as e:  # one odd image must not end a run of hours: record it and go on
        return Rejected(job, f"cannot encode: {type(e).__name__}: {e}")
    n = int(item["input_ids"].shape[-1])
    if n + spec.max_new_tokens > spec.max_length:
        return Rejected(job, f"prompt too long: {n} tokens + max_new_tokens {spec.max_new_tokens} "
                             f"> model max length {spec.max_length}")
    return Prepared(job, prompt, item, method)
