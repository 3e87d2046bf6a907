"""`sicog world export-vlmeval`: the world's benchmarks as VLMEvalKit TSV datasets.

VLMEvalKit reads `$LMUData/<name>.tsv`. Two datasets are written per split:

- `<prefix>_QA`: the multiple-choice questions (index, image, question, A-D, answer letter,
  category = skill), evaluated by VLMEvalKit's `ImageMCQDataset`;
- `<prefix>_POPE`: the yes/no object probes (index, image, question, answer Yes/No,
  category = random/popular/adversarial), evaluated by `ImageYORNDataset`, whose POPE rating
  VLMEvalKit selects by the `POPE` in the name.

Images are base64 PNG; a row whose image already appeared in the file stores the index of that
row instead (VLMEvalKit's own space saving). Short-answer questions and captions have no scorer
in VLMEvalKit for custom data and are not exported (counted in the manifest). `manifest.json`
lists each dataset with the VLMEvalKit class and question type the adapter needs; a record whose
image cannot be read is left out and written to `rejects.jsonl` with the reason.
"""
from __future__ import annotations

import argparse
import base64
import io
import logging
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from sicog.data.records import JsonlAppender, read_records, record_id, write_json
from sicog.evaluate.prompts import bare_question, known_instructions, option_map
from sicog.evaluate.settings import load_eval_config

log = logging.getLogger(__name__)

DATASET_CLASSES = {"multiple_choice": "ImageMCQDataset", "yes_no": "ImageYORNDataset"}
# Cells that pandas.read_csv (VLMEvalKit's TSV reader) turns into missing values by default.
PANDAS_NA_STRINGS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
    "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
})


def encode_image(path: Path) -> str:
    """The image as base64 PNG (RGB); ValueError when it is missing or unreadable."""
    if not path.is_file():
        raise ValueError(f"missing image {path}")
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except Exception as e:  # PIL raises several types for damaged files
        raise ValueError(f"unreadable image {path}: {e}") from None
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_image(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")


def resolve_images(frame: pd.DataFrame) -> list[Image.Image]:
    """Decode every row's image, following rows that store another row's index instead of pixels."""
    by_index = {str(i): str(v) for i, v in zip(frame["index"], frame["image"])}
    out = []
    for value in frame["image"]:
        value = str(value)
        if len(value) <= 64:
            value = by_index[value]
        out.append(decode_image(value))
    return out


def _qa_row(rec: dict, instructions: list[str]) -> dict | None:
    if not rec.get("options"):
        return None
    options = option_map(rec["options"])
    answer = str(rec.get("answer", "")).strip()
    if answer not in options:
        # The gold may be the option text rather than its letter.
        letters = [k for k, v in options.items() if v == answer]
        if len(letters) != 1:
            raise ValueError(f"answer {answer!r} is neither an option letter nor one option's text")
        answer = letters[0]
    row = {"question": bare_question(rec["question"], options, instructions), "answer": answer,
           "category": rec.get("skill", "")}
    row.update(options)
    return row


def _pope_row(rec: dict, instructions: list[str]) -> dict:
    answer = str(rec.get("answer", "")).strip().lower()
    if answer not in ("yes", "no"):
        raise ValueError(f"POPE answer must be yes or no, got {rec.get('answer')!r}")
    return {"question": bare_question(rec["question"], None, instructions), "answer": answer.capitalize(),
            "category": rec.get("variant", "")}


def _check_cells(row: dict) -> None:
    lost = {k: v for k, v in row.items() if isinstance(v, str) and v in PANDAS_NA_STRINGS}
    if lost:
        raise ValueError(f"cells {lost} would be read back as missing values by VLMEvalKit's TSV reader")


def _write_tsv(path: Path, rows: list[dict]) -> None:
    frame = pd.DataFrame(rows)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, sep="\t", index=False)
    # Read back the way VLMEvalKit reads it: a text that pandas parses as missing would corrupt a row.
    back = pd.read_csv(tmp, sep="\t")
    text_cols = [c for c in frame.columns if c not in ("index",)]
    broken = [c for c in text_cols if back[c].isna().sum() != frame[c].isna().sum()]
    if len(back) != len(frame) or broken:
        tmp.unlink()
        raise ValueError(f"{path.name}: columns {broken} do not survive a TSV round trip")
    tmp.replace(path)


def export_vlmeval(world: str | Path, out: str | Path, split: str = "eval", prefix: str | None = None,
                   eval_config: str = "v1") -> dict:
    """Write `<prefix>_QA.tsv`, `<prefix>_POPE.tsv`, `manifest.json` and `rejects.jsonl` under `out`.

    Questions are stored bare (no options, no answer instruction): the adapter adds them back with
    the suffixes of the eval config, and VLMEvalKit's own prompts add the options for other models.
    """
    world, out = Path(world), Path(out)
    instructions = known_instructions(load_eval_config(eval_config))
    prefix = prefix or f"SICOG_{split.upper()}"
    out.mkdir(parents=True, exist_ok=True)
    rejects_path = out / "rejects.jsonl"
    rejects_path.unlink(missing_ok=True)
    manifest: dict = {"world": str(world), "split": split, "datasets": {}}
    with JsonlAppender(rejects_path) as rejects:
        for bench, suffix, qtype, to_row in (("qa", "QA", "multiple_choice", _qa_row),
                                            ("pope", "POPE", "yes_no", _pope_row)):
            src = world / "data" / split / f"{bench}.jsonl"
            records = read_records(src)
            rows, not_mc, image_rows = [], 0, {}
            for i, rec in enumerate(tqdm(records, desc=f"export {bench}", unit="rec")):
                rid = record_id(rec, i)
                try:
                    row = to_row(rec, instructions)
                    if row is None:
                        not_mc += 1
                        continue
                    _check_cells(row)
                    image = rec.get("image")
                    if not image:
                        raise ValueError("record has no image")
                    index = len(rows)
                    if image in image_rows:
                        row["image"] = str(image_rows[image])
                    else:
                        row["image"] = encode_image(world / image)
                        image_rows[image] = index
                except (ValueError, KeyError) as e:
                    rejects.write({"id": rid, "benchmark": bench, "reason": str(e)})
                    continue
                rows.append({"index": index, "id": rid, **row})
            name = f"{prefix}_{suffix}"
            if not rows:
                raise ValueError(f"{src}: no exportable {qtype} records")
            columns = ["index", "image", "question", *sorted({k for r in rows for k in r if len(k) == 1}),
                       "answer", "category", "id"]
            _write_tsv(out / f"{name}.tsv", [{c: r.get(c) for c in columns} for r in rows])
            manifest["datasets"][name] = {"benchmark": bench, "type": qtype, "class": DATASET_CLASSES[qtype],
                                          "rows": len(rows), "source": str(src)}
            if not_mc:
                manifest["datasets"][name]["not_exported_short_answer"] = not_mc
            log.info("wrote %s (%d rows)", out / f"{name}.tsv", len(rows))
        manifest["rejected"] = rejects.count
    write_json(out / "manifest.json", manifest)
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--world", required=True, help="a built world folder")
    parser.add_argument("--out", required=True, help="folder for the TSVs (use it as $LMUData)")
    parser.add_argument("--split", default="eval", choices=["eval", "val"])
    parser.add_argument("--prefix", default=None, help="dataset name prefix (default SICOG_<SPLIT>)")


def run(args: argparse.Namespace) -> int:
    from sicog.data.checks import InputError, check_input_dir, check_output_dir
    from sicog.data.output_lock import OutputLock

    world = check_input_dir(args.world, "--world", "a built world")
    check_output_dir(args.out, "--out", create=False)
    for bench in ("qa", "pope"):
        if not (world / "data" / args.split / f"{bench}.jsonl").is_file():
            raise InputError(f"--world {world} has no data/{args.split}/{bench}.jsonl (the benchmarks of a built "
                             "world, `sicog world build`)")
    out = check_output_dir(args.out, "--out")
    with OutputLock(out, "--out"):  # one writer per output: two exports would interleave their files
        try:
            manifest = export_vlmeval(world, out, split=args.split, prefix=args.prefix)
        except ValueError as e:  # a split with no exportable record
            raise InputError(f"--world: {e}") from None
    for name, info in manifest["datasets"].items():
        print(f"{name}: {info['rows']} rows ({info['class']})")
    if manifest["rejected"]:
        print(f"{manifest['rejected']} records left out, see {Path(args.out) / 'rejects.jsonl'}")
    return 0
