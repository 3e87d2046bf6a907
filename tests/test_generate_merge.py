"""merge-candidates: exactly-once checks, input order, rejects, partial lines, waiting for other ranks."""
import json
import threading
import time

import pytest

from cli_helpers import sicog
from sicog.cli import main
from sicog.data.records import read_records, write_jsonl
from sicog.generate.merge import MergeError, merge
from sicog.generate.shard import Chunk, rank_of, rejects_path, shard_glob, shard_path

GEN = {"task": "caption", "prompt_name": "cod-default", "model": "m", "temperature": 0.7, "top_p": 0.9,
       "top_k": 0, "num_beams": 1, "max_new_tokens": 8, "min_new_tokens": 0, "seed": 0}


def inputs(tmp_path, ids):
    path = tmp_path / "in.jsonl"
    write_jsonl(path, [{"id": i, "image": f"{i}.png", "conversations": []} for i in ids])
    return path


def cand(i, **gen):
    return {"id": i, "image": f"{i}.png", "prompt": "<image>\nx", "candidates": [f"c{i}a", f"c{i}b"],
            "generation": {**GEN, **gen, "augment": None}}


def write_shards(out, ids, world, rejected=()):
    for r in range(world):
        mine = [i for i in ids if rank_of(i, world) == r]
        write_jsonl(shard_path(out, r, world), [cand(i) for i in mine if i not in rejected])
        write_jsonl(rejects_path(shard_path(out, r, world)),
                    [{"id": i, "index": ids.index(i), "reason": "image not found: x", "record": {}}
                     for i in mine if i in rejected])


def test_merge_in_input_order_with_rejects_and_duplicates(tmp_path):
    ids = [f"r{k}" for k in range(9)]
    src = inputs(tmp_path, ids + ["r3"])  # r3 repeated: the second occurrence is a reject
    out = tmp_path / "cands.jsonl"
    write_shards(out, ids, 3, rejected={"r5"})
    rc = main(["merge-candidates", "--inputs", str(src), "--shards", shard_glob(out), "--out", str(out)])
    assert rc == 0
    merged = read_records(out)
    assert [r["id"] for r in merged] == [i for i in ids if i != "r5"]
    rejects = read_records(rejects_path(out))
    assert [(r["id"], r["index"]) for r in rejects] == [("r5", 5), ("r3", 9)]
    assert "duplicate id" in rejects[1]["reason"] and "image not found" in rejects[0]["reason"]


def test_missing_duplicate_and_unknown_ids_are_named(tmp_path):
    ids = [f"r{k}" for k in range(6)]
    src, out = inputs(tmp_path, ids), tmp_path / "c.jsonl"
    write_shards(out, ids[:-1], 2)  # r5 never generated
    with pytest.raises(MergeError, match="'r5'"):
        merge(str(src), shard_glob(out), str(out))
    assert not out.exists()
    extra = shard_path(out, 1, 2)
    with extra.open("a") as f:
        f.write(json.dumps(cand("r0")) + "\n")
    with pytest.raises(MergeError, match="more than once.*'r0'"):
        merge(str(src), shard_glob(out), str(out))
    write_shards(out, ids, 2)
    with extra.open("a") as f:
        f.write(json.dumps(cand("zz")) + "\n")
    with pytest.raises(MergeError, match="not inputs.*'zz'"):
        merge(str(src), shard_glob(out), str(out))


def test_cli_error_is_a_clear_exit_message(tmp_path, capsys):
    # a bad input is one line naming the argument, exit 2 (sicog.data.checks.InputError)
    src, out = inputs(tmp_path, ["a", "b"]), tmp_path / "c.jsonl"
    rc, err = sicog("merge-candidates", "--inputs", str(src), "--shards", shard_glob(out), "--out", str(out))
    assert rc == 2 and "--shards: no candidate shards match" in err and "Traceback" not in err, err
    write_jsonl(shard_path(out, 0, 1), [cand("a")])
    rc, err = sicog("merge-candidates", "--inputs", str(src), "--shards", shard_glob(out), "--out", str(out))
    assert rc == 2 and "--shards: 1 input id(s) are in no shard" in err and "'b'" in err, err
    rc, err = sicog("merge-candidates", "--inputs", str(src), "--shards", shard_glob(out), "--out", str(out),
                    "--chunk", "2/2")
    assert rc == 2 and "--chunk: chunk '2/2'" in err, err
    assert not out.exists()


def test_mixed_settings_and_partial_last_line(tmp_path):
    ids = ["a", "b", "c"]
    src, out = inputs(tmp_path, ids), tmp_path / "c.jsonl"
    write_jsonl(shard_path(out, 0, 1), [cand("a"), cand("b"), cand("c", temperature=1.0)])
    with pytest.raises(MergeError, match="different settings"):
        merge(str(src), shard_glob(out), str(out))
    shard = shard_path(out, 0, 1)
    shard.write_text(json.dumps(cand("a")) + "\n" + json.dumps(cand("b")) + "\n" + json.dumps(cand("c"))[:20])
    with pytest.raises(MergeError, match="1 input id.*'c'"):
        merge(str(src), shard_glob(out), str(out))


def test_wait_polls_until_the_last_rank_finishes(tmp_path):
    ids = [f"r{k}" for k in range(5)]
    src, out = inputs(tmp_path, ids), tmp_path / "c.jsonl"
    write_shards(out, ids[:3], 1)

    def late_rank():
        time.sleep(0.4)
        with shard_path(out, 0, 1).open("a") as f:
            f.write("".join(json.dumps(cand(i)) + "\n" for i in ids[3:]))

    t = threading.Thread(target=late_rank)
    t.start()
    assert merge(str(src), shard_glob(out), str(out), wait=10, poll=0.1) == (5, 0)
    t.join()


def test_chunk_restricts_expected_ids(tmp_path):
    ids = [f"r{k}" for k in range(12)]
    src, out = inputs(tmp_path, ids), tmp_path / "c.jsonl"
    chunk = Chunk.parse("1/3")
    write_jsonl(shard_path(out, 0, 1), [cand(i) for i in ids if chunk.contains(i)])
    n, _ = merge(str(src), shard_glob(out), str(out), chunk=chunk)
    assert 0 < n < 12 and n == sum(chunk.contains(i) for i in ids)
    with pytest.raises(ValueError, match="zero-based"):
        Chunk.parse("3/3")
