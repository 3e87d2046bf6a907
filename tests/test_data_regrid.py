"""The six-slice training augmentation (`regrid_prob`), as the authors' train.py does it."""
import math

import pytest
from PIL import Image

from tiny_models import builtin_tokenizer
from sicog.data.dataset import SupervisedDataset, prepare_samples
from sicog.data.mixture import DataEntry
from sicog.model import SicogProcessor
from sicog.data.regrid import regrid_size
from sicog.model.layout import ImageLayout
from sicog.model.slicing import slice_geometry
from sicog.train.config import resolve_config

# the paper's slicing rules at a small scale, so images stay small: 6 slices are possible
LAYOUT = ImageLayout(image_scale=56, patch_size=14, max_slices=7, query_grid=2)


@pytest.fixture(scope="module")
def proc():
    return SicogProcessor(builtin_tokenizer(), LAYOUT)


def _entries(tmp_path, n):
    Image.new("RGB", (90, 70), (200, 10, 10)).save(tmp_path / "a.png")     # a 2x2 grid at scale 56
    recs = [{"id": f"r{i}", "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "Red."}]} for i in range(n)]
    return [DataEntry(r, tmp_path, "data.jsonl", i) for i, r in enumerate(recs)]


def test_regrid_size_has_the_area_of_six_slices():
    assert slice_geometry(90, 70, 7, 56, 14).num_slices == 4
    w, h = regrid_size(90, 70, 6, 56)
    assert (w, h) == (int(90 * math.sqrt(6 * 56 * 56 / 6300)), int(70 * math.sqrt(6 * 56 * 56 / 6300)))
    assert abs(w * h - 6 * 56 * 56) / (6 * 56 * 56) < 0.03
    assert slice_geometry(w, h, 7, 56, 14).num_slices == 6


def test_a_fraction_of_images_is_regridded_deterministically(tmp_path, proc):
    entries = _entries(tmp_path, 400)
    plain = prepare_samples(entries, proc, 4096, progress=False)
    samples = prepare_samples(entries, proc, 4096, progress=False, regrid_prob=0.1, seed=3)
    chosen = [s for s in samples if s.regrid_to]
    assert 20 <= len(chosen) <= 60                     # about 10% of 400
    again = prepare_samples(entries, proc, 4096, progress=False, regrid_prob=0.1, seed=3)
    assert [s.regrid_to for s in again] == [s.regrid_to for s in samples]
    other = prepare_samples(entries, proc, 4096, progress=False, regrid_prob=0.1, seed=4)
    assert [s.id for s in other if s.regrid_to] != [s.id for s in chosen]
    # the checked length is the length trained on: 6 slices instead of 4
    ds = SupervisedDataset(samples, proc)
    for i, s in enumerate(samples[:80]):
        item = ds[i]
        assert len(item["input_ids"]) == s.length
        assert item["images"].slices.shape[0] == (6 if s.regrid_to else 4)
    assert all(p.length < c.length for p, c in zip(plain, samples) if c.regrid_to)


def test_off_by_default_and_errors(tmp_path, proc):
    entries = _entries(tmp_path, 20)
    assert not any(s.regrid_to for s in prepare_samples(entries, proc, 4096, progress=False))
    with pytest.raises(ValueError, match=r"regrid_prob must be in \[0, 1\]"):
        prepare_samples(entries, proc, 4096, progress=False, regrid_prob=1.5)
    small = SicogProcessor(builtin_tokenizer(), ImageLayout(image_scale=56, patch_size=14, max_slices=4, query_grid=2))
    with pytest.raises(ValueError, match="max_slices >= 6"):
        prepare_samples(entries, small, 4096, progress=False, regrid_prob=0.1)


def test_paper_profile_turns_it_on_where_images_are_sliced():
    base = {"model_name_or_path": "m", "data_path": "d.jsonl", "output_dir": "out"}
    for stage, expected in [("stage0", 0.1), ("stage1_5", 0.1), ("stage2", 0.1), ("stage1", 0.0)]:
        assert resolve_config({**base, "stage": stage, "profile": "paper"}, world_size=32).regrid_prob == expected
    assert resolve_config({**base, "stage": "stage2", "profile": "tiny"}).regrid_prob == 0.0
