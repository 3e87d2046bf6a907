"""`sicog build-preferences`: preference records `{id, image, prompt, chosen, rejected}` for DPO.

Two sources, both giving the two sides in the same full format:

- curation: the pairs `sicog curate` wrote (chosen = the most consistent candidate, rejected = a
  candidate of the lower-scoring half), checked again;
- noisy: candidates generated on corrupted images (a candidate file whose generation.augment is
  set) are the rejected side against the curated clean answer of the same id (a curated stage-1.5
  file) as the chosen side; which corrupted candidate is used is a seeded choice per id.

An id missing on either side, an empty side, identical sides or any other failed check goes to
the rejects file with the reason. `validate_pair` is the one check of a preference record, shared
with the DPO trainer.
"""
from __future__ import annotations

import argparse
import logging
import random
from pathlib import Path

from sicog.curate.candidates import KINDS, full_text, load_candidates, read_rows
from sicog.data.checks import InputError, check_input_file, check_output_file
from sicog.data.formats import IMAGE_TOKEN, first_human_turn, strip_image_token
from sicog.data.output_lock import OutputLock
from sicog.data.records import record_id, write_jsonl

log = logging.getLogger("sicog.preferences")

SOURCES = ("curation", "noisy", "both")


def validate_pair(record: object) -> str | None:
    """None for a usable preference record, else the reason it is not."""
    if not isinstance(record, dict):
        return "not a JSON object"
    rid = record.get("id")
    if rid is None or isinstance(rid, (dict, list)) or not str(rid).strip():
        return "missing 'id'"
    for key in ("prompt", "chosen", "rejected"):
        value = record.get(key)
        if not isinstance(value, str) or not value.strip():
            return f"missing or empty {key!r}"
    if record["chosen"].strip() == record["rejected"].strip():
        return "chosen and rejected are the same text"
    image = record.get("image")
    if image is not None and (not isinstance(image, str) or not image):
        return "'image' is present but not a non-empty string"
    tokens = record["prompt"].count(IMAGE_TOKEN)
    if image and tokens != 1:
        return f"prompt holds {tokens} {IMAGE_TOKEN} tokens for one image"
    if not image and tokens:
        return f"prompt holds {IMAGE_TOKEN} but the record has no image"
    return None


def _reject(source: str, rid, line, reason: str) -> dict:
    return {"source": source, "id": None if rid is None else str(rid), "line": line, "reason": reason}


def pairs_from_curation(path: Path) -> tuple[list[dict], list[dict]]:
    """The curation pairs that pass `validate_pair`, each id once; rejects for the rest."""
    pairs, rejects, seen = [], [], set()
    for line, rec, error in read_rows(path):
        rid = rec.get("id") if isinstance(rec, dict) else None
        reason = error or validate_pair(rec)
        if reason is None and str(rid) in seen:
            reason = f"duplicate id {rid!r}"
        if reason:
            rejects.append(_reject("curation", rid, line, reason))
            continue
        seen.add(str(rid))
        pair = {"id": rec["id"]}
        if rec.get("image"):
            pair["image"] = rec["image"]
        pair.update(prompt=rec["prompt"], chosen=rec["chosen"], rejected=rec["rejected"])
        pairs.append(pair)
    return pairs, rejects


def _curated_answers(path: Path) -> tuple[dict[str, tuple[int, dict]], list[dict]]:
    """id -> (line, {image, prompt, chosen}) from a curated stage-1.5 file; rejects for unusable records."""
    answers, rejects = {}, []
    for line, rec, error in read_rows(path):
        if error is None and not isinstance(rec, dict):
            error = "not a JSON object"
        if error is None and rec.get("id") in (None, ""):
            error = "curated record has no 'id'"
        if error:
            rejects.append(_reject("noisy", rec.get("id") if isinstance(rec, dict) else None, line, error))
            continue
        rid = record_id(rec)
        prompt = first_human_turn(rec)
        answer = next((t.get("value") for t in rec.get("conversations") or []
                       if isinstance(t, dict) and t.get("from") == "gpt"), None)
        if rid in answers:
            error = f"duplicate id {rid!r} in the curated set"
        elif not isinstance(prompt, str) or not prompt.strip():
            error = "curated record has no human turn"
        elif not isinstance(answer, str) or not answer.strip():
            error = "curated record has an empty chosen side (no gpt turn)"
        if error:
            rejects.append(_reject("noisy", rid, line, error))
            continue
        answers[rid] = (line, {"image": rec.get("image"), "prompt": prompt, "chosen": answer.strip()})
    return answers, rejects


def pairs_from_noisy(noisy_path: Path, curated_path: Path, seed: int, kind: str = "auto") -> tuple[list[dict], list[dict]]:
    """Pairs of (curated clean answer, seeded corrupted-image candidate), matched by id."""
    try:
        curated, rejects = _curated_answers(curated_path)
    except (OSError, ValueError) as e:  # missing, or a JSON-list file that does not parse
        raise InputError(f"--curated: {e}") from None
    curated_rejected = {r["id"] for r in rejects if r["id"] is not None}
    try:
        items, load_rejects, _ = load_candidates(noisy_path, kind)
    except (OSError, ValueError) as e:
        raise InputError(f"--noisy: {e}") from None
    rejects += [_reject("noisy", r["id"], r["line"], f"corrupted-image candidates: {r['reason']}") for r in load_rejects]
    noisy_ids = {item.id for item in items} | {r["id"] for r in load_rejects if r["id"] is not None}
    pairs = []
    for item in items:
        augment = (item.generation or {}).get("augment")
        if not augment:
            rejects.append(_reject("noisy", item.id, item.line,
                                   "generation.augment is not set: not a corrupted-image candidate"))
            continue
        if item.id not in curated:
            if item.id in curated_rejected:
                continue  # already rejected with the curated side's reason
            rejects.append(_reject("noisy", item.id, item.line, "id not in the curated set (no chosen side)"))
            continue
        clean = curated[item.id][1]
        if strip_image_token(item.prompt) != strip_image_token(clean["prompt"]):
            rejects.append(_reject("noisy", item.id, item.line,
                                   "prompt differs between the curated record and the corrupted-image candidates"))
            continue
        pool = [t for t in (full_text(item.candidates[i], item.kind) for i in item.usable) if t != clean["chosen"]]
        if not pool:
            rejects.append(_reject("noisy", item.id, item.line,
                                   "every corrupted-image candidate equals the chosen answer"))
            continue
        pair = {"id": item.id}
        if clean["image"]:
            pair["image"] = clean["image"]
        pair.update(prompt=clean["prompt"], chosen=clean["chosen"],
                    rejected=random.Random(f"{seed}:noisy:{item.id}").choice(pool))
        reason = validate_pair(pair)
        if reason:
            rejects.append(_reject("noisy", item.id, item.line, reason))
            continue
        pairs.append(pair)
    for rid, (line, _) in curated.items():
        if rid not in noisy_ids:
            rejects.append(_reject("noisy", rid, line, "no corrupted-image candidates for this id (no rejected side)"))
    return pairs, rejects


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default="both", choices=SOURCES)
    parser.add_argument("--pairs", help="curation pairs (preferences.jsonl written by `sicog curate`)")
    parser.add_argument("--noisy", help="candidate file generated on corrupted images (generation.augment set)")
    parser.add_argument("--curated", help="curated stage-1.5 records (chosen side of noisy pairs), e.g. curated_tau0.85.jsonl")
    parser.add_argument("--kind", default="auto", choices=("auto",) + KINDS,
                        help="format of the corrupted-image candidates (auto: from their generation metadata)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corrupted-candidate choice")
    parser.add_argument("--out", required=True, help="output preference file (JSONL)")
    parser.add_argument("--rejects", help="rejects file (default: OUT with .rejects.jsonl)")


def _check_source(path: str, arg: str) -> Path:
    """An existing, non-empty input file given as `arg`; InputError naming `arg` otherwise."""
    p = check_input_file(path, arg)
    with p.open("rb") as f:
        if not any(line.strip() for line in f):
            raise InputError(f"{arg} {p} holds no records (an empty file)")
    return p


def run(args: argparse.Namespace) -> int:
    need = {"curation": ["pairs"], "noisy": ["noisy", "curated"], "both": ["pairs", "noisy", "curated"]}[args.source]
    missing = [f"--{n}" for n in need if not getattr(args, n)]
    if missing:
        raise InputError(f"--source {args.source} needs {' and '.join(missing)}")
    sources = {n: _check_source(getattr(args, n), f"--{n}") for n in need}
    out = check_output_file(args.out, "--out")
    rejects_path = out.with_name(out.stem + ".rejects.jsonl")
    if args.rejects:
        rejects_path = check_output_file(args.rejects, "--rejects")
        if rejects_path.resolve() == out.resolve():
            raise InputError(f"--rejects {rejects_path} is the --out file; give another name")
    # one writer per output: two builders on one --out would each replace the other's file
    with OutputLock(out, "--out", folder=False), OutputLock(rejects_path, "--rejects", folder=False):
        return _build(args, sources, out, rejects_path)


def _build(args: argparse.Namespace, sources: dict, out: Path, rejects_path: Path) -> int:
    pairs, rejects = [], []
    counts = {}
    if args.source in ("curation", "both"):
        try:
            got, bad = pairs_from_curation(sources["pairs"])
        except (OSError, ValueError) as e:  # unreadable, or a JSON-list file that does not parse
            raise InputError(f"--pairs: {e}") from None
        pairs += got
        rejects += bad
        counts["curation"] = len(got)
    if args.source in ("noisy", "both"):
        got, bad = pairs_from_noisy(sources["noisy"], sources["curated"], args.seed, args.kind)
        pairs += got
        rejects += bad
        counts["noisy"] = len(got)
    write_jsonl(out, pairs)
    write_jsonl(rejects_path, rejects)
    log.info("%d preference pairs (%s) -> %s; %d rejects -> %s", len(pairs),
             ", ".join(f"{k}: {v}" for k, v in counts.items()), out, len(rejects), rejects_path)
    if not pairs:
        log.error("no preference pair could be built; see %s", rejects_path)
        return 1
    return 0
