"""The shared utilities: torchrun rank, device and dtype resolution, the tolerant JSONL reader."""
from __future__ import annotations

import pytest
import torch

from sicog.data.records import JsonlAppender, read_appended
from sicog.model.precision import DTYPES, dtype_named
from sicog.runtime import RankInfo, rank_info, resolve_device


def test_rank_info_reads_torchrun_variables(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert rank_info() == RankInfo(0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    info = rank_info()
    assert (info.rank, info.world_size, info.local_rank) == (3, 4, 3)  # LOCAL_RANK defaults to RANK
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert rank_info().local_rank == 1
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4 WORLD_SIZE=4"):
        rank_info()
    monkeypatch.setenv("WORLD_SIZE", "x")
    with pytest.raises(ValueError, match="RANK/WORLD_SIZE/LOCAL_RANK"):
        rank_info()


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto", local_rank=3) == torch.device("cuda:1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "0")
    assert resolve_device("cuda") == torch.device("cuda:0")


def test_dtype_names():
    assert dtype_named("bfloat16") is torch.bfloat16 and set(DTYPES) == {"float32", "bfloat16", "float16"}
    with pytest.raises(ValueError, match="float32, bfloat16, float16"):
        dtype_named("auto")


def test_read_appended_ignores_an_unfinished_last_line(tmp_path):
    path = tmp_path / "x.jsonl"
    assert read_appended(path) == []
    path.write_bytes(b'{"id": 1}\n\n{"id": 2}\n{"id": 3')
    assert read_appended(path) == [{"id": 1}, {"id": 2}]
    assert read_appended(path, strict=True) == [{"id": 1}, {"id": 2}]
    # a complete line that is not an object: skipped, or named with strict
    path.write_bytes(b'{"id": 1}\n{"id": \n[1]\n{"id": 4}\n')
    assert read_appended(path) == [{"id": 1}, {"id": 4}]
    with pytest.raises(ValueError, match=r"x.jsonl:2: invalid JSON"):
        read_appended(path, strict=True)
    path.write_bytes(b'{"id": 1}\n[1]\n')
    with pytest.raises(ValueError, match=r"x.jsonl:2: not a JSON object"):
        read_appended(path, strict=True)


def test_appender_resumes_after_the_records_the_reader_sees(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b"}\n{"id": "c", "tex')
    with JsonlAppender(path, fsync=False) as out:
        assert out.done_ids == {"a", "b"}
        out.write({"id": "c"})
    assert [r["id"] for r in read_appended(path)] == ["a", "b", "c"]
