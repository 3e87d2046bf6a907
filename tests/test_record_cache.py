"""The record-check cache: a second start opens no image and reads the same samples; changing the
data file, the processor's settings or the check settings checks again; `sicog train` uses it."""
import json

import pytest
from PIL import Image

from sicog.data import record_cache
from sicog.data.dataset import RejectLog, prepare_samples
from sicog.data.mixture import load_data
from train_fixtures import make_world


@pytest.fixture()
def opened(monkeypatch):
    """Counts every PIL.Image.open call (the record checks read image headers through it)."""
    calls = []
    real = Image.open

    def counting(*args, **kwargs):
        calls.append(args[0] if args else kwargs.get("fp"))
        return real(*args, **kwargs)

    monkeypatch.setattr(Image, "open", counting)
    return calls


@pytest.fixture()
def world(tmp_path):
    data = make_world(tmp_path / "world", n_image=6, n_text=2)
    # one record whose image is missing: a reject, and the cache must keep the reason
    with data.open("a") as f:
        f.write(json.dumps({"id": "gone", "image": "images/none.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A square."}]}) + "\n")
    return data


def _prepare(data, processor, cache, **kw):
    rejects = RejectLog(None)
    samples = prepare_samples(load_data(data), processor, kw.pop("max_len", 4096), rejects, progress=False,
                              cache_dir=cache, **kw)
    return [(s.id, s.length, s.image_path, s.regrid_to) for s in samples], dict(rejects.counts)


def test_second_start_opens_no_image_and_gives_the_same_samples(tiny, world, tmp_path, opened):
    _, processor = tiny
    cache = tmp_path / "cache"
    first, rejects = _prepare(world, processor, cache)
    assert len(opened) == 6 and rejects == {"missing image": 1}
    assert len(list(cache.glob("*.json"))) == 1
    opened.clear()
    second, rejects2 = _prepare(world, processor, cache)
    assert opened == []
    assert second == first and rejects2 == rejects


def test_changes_invalidate(tiny, world, tmp_path, opened):
    model, processor = tiny
    cache = tmp_path / "cache"
    _prepare(world, processor, cache)
    # the data file's content: one more record
    lines = world.read_text().splitlines()
    world.write_text("\n".join(lines + [lines[0].replace('"img0"', '"img0b"')]) + "\n")
    opened.clear()
    _prepare(world, processor, cache)
    assert len(opened) == 7
    # the processor's settings: fewer slices change the lengths
    from sicog.model.processing import SicogProcessor

    fewer = SicogProcessor(processor.tokenizer, {**processor.layout.to_dict(), "max_slices": 2})
    opened.clear()
    a, _ = _prepare(world, fewer, cache)
    assert len(opened) == 7
    b, _ = _prepare(world, processor, cache)
    assert a != b
    # the check settings: a shorter model_max_length
    opened.clear()
    _prepare(world, processor, cache, max_len=200)
    assert len(opened) == 7
    assert len(list(cache.glob("*.json"))) == 4


def test_no_cache_dir_means_no_cache(tiny, world, tmp_path, opened):
    _, processor = tiny
    _prepare(world, processor, None)
    _prepare(world, processor, None)
    assert len(opened) == 12


def test_a_corrupt_cache_file_is_checked_again(tiny, world, tmp_path, opened):
    _, processor = tiny
    cache = tmp_path / "cache"
    first, _ = _prepare(world, processor, cache)
    (path,) = cache.glob("*.json")
    path.write_text(path.read_text()[:50])  # cut by a kill mid-write (the write is atomic, but a copy may not be)
    opened.clear()
    again, _ = _prepare(world, processor, cache)
    assert again == first and len(opened) == 6


def test_train_second_start_reads_the_cache(tmp_path, monkeypatch, opened):
    from train_fixtures import read_log, save_tiny_model, train

    monkeypatch.setenv("SICOG_CACHE_DIR", str(tmp_path / "cache"))
    model = save_tiny_model(tmp_path / "model")
    data = make_world(tmp_path / "world", n_image=4, n_text=2)
    args = ["--stage", "stage2", "--profile", "tiny", "--model_name_or_path", str(model), "--data_path", str(data),
            "--max_steps", "1", "--save_strategy", "no", "--global_batch_size", "2",
            "--per_device_train_batch_size", "2"]
    assert train(*args, "--output_dir", str(tmp_path / "a")) == 0
    assert len(list((tmp_path / "cache" / "record-checks").glob("*.json"))) == 1
    first = len(opened)
    opened.clear()
    assert train(*args, "--output_dir", str(tmp_path / "b")) == 0
    # the second start opens images only to train on them (the loader's batches), not the 4 checks
    assert len(opened) == first - 4
    assert read_log(tmp_path / "b")[0]["loss"] == pytest.approx(read_log(tmp_path / "a")[0]["loss"])


@pytest.fixture()
def tiny():
    from tiny_models import build_random_tiny

    return build_random_tiny(seed=0)


def test_key_covers_the_tokenizer(tiny):
    _, processor = tiny
    fp = record_cache.processor_fingerprint(processor)
    processor.tokenizer.add_tokens(["<new-token>"])
    assert record_cache.processor_fingerprint(processor) != fp
