"""`sicog generate` + `sicog merge-candidates` in-process on a saved random tiny model."""
from pathlib import Path

import pytest
import torch

import re

from cli_helpers import sicog
from generate_helpers import GOOD, gen_args, lines, make_inputs, merged, save_tiny_model
from sicog.cli import main
from sicog.data.records import read_records
from sicog.generate.engine import CandidateEngine, SamplingSettings
from sicog.generate.shard import rejects_path, shard_glob, shard_path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    return save_tiny_model(root / "model"), make_inputs(root / "data")


def generate_and_merge(world, out: Path, *extra: str) -> dict[str, list[str]]:
    model, data = world
    assert main(gen_args(model, data, out, *extra)) == 0
    assert main(["merge-candidates", "--inputs", str(data), "--shards", shard_glob(out), "--out", str(out)]) == 0
    return merged(out)


def test_candidates_file_format_rejects_and_determinism(world, tmp_path):
    a = generate_and_merge(world, tmp_path / "a" / "cands.jsonl", "--batch-size", "4")
    assert list(a) == [f"q{i}" for i in range(GOOD)]
    assert all(len(c) == 3 for c in a.values())
    assert len({c for cs in a.values() for c in cs}) > GOOD  # sampling differs across candidates and inputs
    rec = read_records(tmp_path / "a" / "cands.jsonl")[0]
    assert rec["image"] == "img/0.png" and rec["conversations"][0]["from"] == "human"
    assert rec["prompt"].startswith("<image>\nHow many shapes") and rec["prompt"].endswith("step-by-step.")
    assert rec["generation"] == {"task": "reasoning", "prompt_name": "cot-default", "model": str(world[0]),
                                 "temperature": 1.0, "top_p": 0.95, "top_k": 0, "num_beams": 1,
                                 "max_new_tokens": 6, "min_new_tokens": 0, "num_candidates": 3, "seed": 5,
                                 "augment": None}
    reasons = {r["id"]: r["reason"] for r in read_records(rejects_path(tmp_path / "a" / "cands.jsonl"))}
    assert set(reasons) == {"missing", "corrupt", "noquestion", "noimage", "q1"}
    assert "image not found" in reasons["missing"] and "cannot decode" in reasons["corrupt"]
    assert "no question" in reasons["noquestion"] and "no image" in reasons["noimage"]
    assert "duplicate id" in reasons["q1"]
    # batch size 1 and a rerun with the same seed give the same candidates; another seed does not
    assert generate_and_merge(world, tmp_path / "b" / "cands.jsonl", "--batch-size", "1") == a
    assert generate_and_merge(world, tmp_path / "d" / "cands.jsonl", "--batch-size", "2", "--length-window", "1") == a
    other = generate_and_merge(world, tmp_path / "c" / "cands.jsonl", "--batch-size", "3", "--seed", "6")
    assert other != a


def test_resume_skips_done_ids_and_refuses_other_settings(world, tmp_path):
    model, data = world
    out = tmp_path / "cands.jsonl"
    full = generate_and_merge(world, tmp_path / "full" / "cands.jsonl", "--batch-size", "2")
    assert main(gen_args(model, data, out, "--batch-size", "2")) == 0
    shard = shard_path(out, 0, 1)
    kept = shard.read_text().splitlines(keepends=True)[:3]
    shard.write_text("".join(kept) + kept[-1][:25])  # as after a kill: 3 lines and a partial one
    assert main(gen_args(model, data, out, "--batch-size", "2")) == 0
    ids = [r["id"] for r in lines(shard)]
    assert sorted(ids) == sorted(full) and len(ids) == len(set(ids))
    assert main(["merge-candidates", "--inputs", str(data), "--shards", shard_glob(out), "--out", str(out)]) == 0
    assert merged(out) == full
    before = shard.read_text()
    assert main(gen_args(model, data, out, "--batch-size", "2", "--device", "nosuchdevice")) == 0
    assert shard.read_text() == before  # nothing left to do: the model is not even loaded
    rc, err = sicog(*gen_args(model, data, out, "--temperature", "0.5"))
    assert rc == 2 and "other settings" in err


def test_prompt_too_long_and_augment_are_recorded(world, tmp_path):
    model, data = world
    out = tmp_path / "long.jsonl"
    assert main(gen_args(model, data, out, "--model-max-length", "40")) == 0
    rej = lines(rejects_path(shard_path(out, 0, 1)))
    assert sum("prompt too long" in r["reason"] for r in rej) == GOOD
    out = tmp_path / "aug.jsonl"
    aug = generate_and_merge(world, out, "--augment", "gaussian_blur,mask,mirror_rotation")
    methods = {r["id"]: r["generation"]["augment"] for r in read_records(out)}
    assert set(methods.values()) <= {"gaussian_blur", "mask", "mirror_rotation"} and len(set(methods.values())) > 1
    assert len(aug) == GOOD
    rc, err = sicog(*gen_args(model, data, tmp_path / "x.jsonl", "--augment", "blur"))
    assert rc == 2 and "unknown augment" in err


def test_engine_greedy_equals_model_generate(world):
    from sicog.model import SicogForConditionalGeneration, SicogProcessor

    model = SicogForConditionalGeneration.from_pretrained(world[0]).eval()
    proc = SicogProcessor.from_pretrained(world[0])
    recs = [read_records(world[1])[i] for i in (0, 5, 7)]
    items = [proc.encode(r["conversations"][:1], image=proc.load_image(world[1].parent / r["image"]),
                         add_generation_prompt=True, for_generation=True) for r in recs]
    assert len({len(it["input_ids"]) for it in items}) > 1  # really padded
    eng = CandidateEngine(model, proc, SamplingSettings(num_candidates=2, temperature=0, max_new_tokens=12))
    ours = eng.generate_ids([r["id"] for r in recs], items)
    batch = proc.collate(items, padding_side="left")
    with torch.no_grad():
        ref = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             images=batch["images"], max_new_tokens=12, do_sample=False,
                             suppress_tokens=[proc.image_token_id])
    t = batch["input_ids"].shape[1]
    for b in range(3):
        row = ref[b, t:].tolist()
        eos = eng.eos_ids[0]
        row = row[:row.index(eos)] if eos in row else row
        assert ours[b] == [row, row] and len(set(row)) > 3


def test_beam_search_falls_back_to_generate(world, tmp_path):
    model, data = world
    a = generate_and_merge(world, tmp_path / "a.jsonl", "--num-beams", "3", "--num-candidates", "2",
                           "--temperature", "0")
    assert len(a) == GOOD and all(len(c) == 2 and c[0] != c[1] for c in a.values())  # two distinct beams
    assert generate_and_merge(world, tmp_path / "b.jsonl", "--num-beams", "3", "--num-candidates", "2",
                              "--temperature", "0", "--batch-size", "3") == a
    rc, err = sicog(*gen_args(model, data, tmp_path / "c.jsonl", "--num-beams", "2", "--num-candidates", "3"))
    assert rc == 2 and re.search("num_candidates .* must be <= num_beams", err)


@pytest.mark.parametrize("extra, message", [
    (("--prompt", "cod-default"), "not a reasoning prompt"),
    (("--batch-size", "0"), "--batch-size and --length-window must be >= 1"),
    (("--top-p", "0"), "top_p must be in"),
    (("--chunk", "5/2"), "zero-based"),
])
def test_bad_arguments_exit_with_a_message(world, tmp_path, extra, message):
    rc, err = sicog(*gen_args(world[0], world[1], tmp_path / "o.jsonl", *extra))
    assert rc == 2 and message in err and "Traceback" not in err
    rc, err = sicog(*gen_args(world[0], tmp_path / "none.jsonl", tmp_path / "o.jsonl"))
    assert rc == 2 and "--data" in err and "no such file" in err


def test_unexpected_encode_failure_is_a_reject_not_a_crash(world):
    from sicog.generate.inputs import InputSpec, Job, Rejected, prepare

    class Broken:
        load_image = staticmethod(lambda path: __import__("PIL.Image").Image.new("RGB", (8, 8)))

        def encode(self, *a, **k):
            raise RuntimeError("slicing exploded")

    rec = read_records(world[1])[0]
    res = prepare(Job(0, "q0", rec), InputSpec("reasoning", "cot-default", world[1].parent), Broken())
    assert isinstance(res, Rejected) and res.reason == "cannot encode: RuntimeError: slicing exploded"


def test_length_grouping_keeps_every_input_once():
    from types import SimpleNamespace

    from sicog.generate.cli import length_grouped

    pool = [SimpleNamespace(item={"input_ids": torch.zeros(n)}, name=i) for i, n in enumerate([9, 3, 7, 3, 12, 5, 8])]
    batches = length_grouped(pool, 3)
    assert [len(b) for b in batches] == [3, 3, 1]
    assert sorted(p.name for b in batches for p in b) == list(range(7))
    lengths = [[int(p.item["input_ids"].shape[0]) for p in b] for b in batches]
    assert lengths == [[3, 3, 5], [7, 8, 9], [12]]


def test_resume_with_another_rank_count(world, tmp_path, monkeypatch):
    """A 1-process run cut short, finished by 2 ranks: every id once, candidates as uninterrupted."""
    model, data = world
    full = generate_and_merge(world, tmp_path / "full" / "cands.jsonl")
    out = tmp_path / "cands.jsonl"
    assert main(gen_args(model, data, out)) == 0
    shard = shard_path(out, 0, 1)
    shard.write_text("".join(shard.read_text().splitlines(keepends=True)[:3]))
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        assert main(gen_args(model, data, out)) == 0
    new = [r["id"] for rank in (0, 1) for r in lines(shard_path(out, rank, 2))]
    assert len(new) == GOOD - 3 and not set(new) & {r["id"] for r in lines(shard)}
    assert main(["merge-candidates", "--inputs", str(data), "--shards", shard_glob(out), "--out", str(out)]) == 0
    assert merged(out) == full
