"""Mixture sampling strategies and the modality-length grouped sampler."""
import json
import random

import pytest
import yaml

from sicog.data.mixture import load_data, sample_indices
from sicog.data.sampler import ModalityLengthGroupedSampler, padding_fraction


def test_sampling_strategies():
    assert sample_indices(10, "all", 0) == list(range(10))
    assert sample_indices(10, "first:3", 0) == [0, 1, 2]
    assert sample_indices(10, "end:3", 0) == [7, 8, 9]
    r = sample_indices(100, "random:10", 1)
    assert len(r) == 10 and len(set(r)) == 10 and r == sorted(r)
    assert r == sample_indices(100, "random:10", 1)
    assert r != sample_indices(100, "random:10", 2)
    assert len(sample_indices(100, "25%", 0)) == 25
    assert sample_indices(10, "first:50%", 0) == [0, 1, 2, 3, 4]
    assert sample_indices(5, "first:9", 0) == [0, 1, 2, 3, 4]
    for bad in ("some", "first:", "last:3", "first:1.5", "150%", "3"):
        with pytest.raises(ValueError, match="sampling_strategy"):
            sample_indices(10, bad, 0)


def test_mixture_yaml(tmp_path):
    (tmp_path / "a").mkdir()
    recs_a = [{"id": f"a{i}", "conversations": []} for i in range(10)]
    (tmp_path / "a" / "a.json").write_text(json.dumps(recs_a))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"id": f"b{i}"}) + "\n" for i in range(20)))
    mix = [
        {"json_path": "a/a.json", "sampling_strategy": "end:2"},
        {"json_path": "b.jsonl", "image_folder": "imgs", "sampling_strategy": "random:5"},
    ]
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(mix))
    entries = load_data(tmp_path / "mix.yaml", seed=3)
    assert [e.record["id"] for e in entries[:2]] == ["a8", "a9"]
    assert entries[0].image_root == (tmp_path / "a").resolve()
    assert len(entries) == 7 and all(e.image_root == (tmp_path / "imgs").resolve() for e in entries[2:])
    assert [e.record["id"] for e in load_data(tmp_path / "mix.yaml", seed=3)] == [e.record["id"] for e in entries]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump([{"image_folder": "x"}]))
    with pytest.raises(ValueError, match="no json_path"):
        load_data(tmp_path / "bad.yaml")
    # a single file: images relative to its folder unless an image folder is given
    single = load_data(tmp_path / "a" / "a.json")
    assert len(single) == 10 and single[0].image_root == tmp_path / "a"
    assert load_data(tmp_path / "a" / "a.json", image_folder=tmp_path)[0].image_root == tmp_path


def _data(n=200, seed=0):
    rng = random.Random(seed)
    has_image = [rng.random() < 0.6 for _ in range(n)]
    lengths = [rng.randint(150, 900) if m else rng.randint(10, 400) for m in has_image]
    return lengths, has_image


def test_sampler_grouping_determinism_and_coverage():
    lengths, has_image = _data()
    s = ModalityLengthGroupedSampler(lengths, has_image, batch_size=4, world_size=1, seed=7, mega_batch_mult=4)
    batches = list(s)
    assert len(batches) == len(s)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))  # every sample exactly once
    for b in batches:
        assert len({has_image[i] for i in b}) == 1  # never mixed
        assert 1 <= len(b) <= 4
    assert max(lengths[i] for i in batches[0]) == max(lengths)  # the longest goes first
    assert batches == list(ModalityLengthGroupedSampler(lengths, has_image, 4, 1, seed=7, mega_batch_mult=4))
    other_seed = list(ModalityLengthGroupedSampler(lengths, has_image, 4, 1, seed=8, mega_batch_mult=4))
    assert other_seed != batches
    s.set_epoch(1)
    assert list(s) != batches


def test_sampler_lower_padding_than_random():
    lengths, has_image = _data(400, seed=1)
    grouped = list(ModalityLengthGroupedSampler(lengths, has_image, batch_size=8, seed=0))
    order = list(range(len(lengths)))
    random.Random(0).shuffle(order)
    plain = [order[i:i + 8] for i in range(0, len(order), 8)]
    assert padding_fraction(grouped, lengths) < 0.5 * padding_fraction(plain, lengths)


def test_sampler_shards_across_ranks():
    from accelerate.data_loader import BatchSamplerShard

    lengths, has_image = _data(101, seed=2)
    world = 2
    s = ModalityLengthGroupedSampler(lengths, has_image, batch_size=4, world_size=world, seed=3)
    shards = [list(BatchSamplerShard(s, num_processes=world, process_index=r)) for r in range(world)]
    assert len(shards[0]) == len(shards[1])  # every rank steps the same number of times
    seen = [i for shard in shards for b in shard for i in b]
    assert set(seen) == set(range(len(lengths)))
    for shard in shards:
        for b in shard:
            assert len({has_image[i] for i in b}) == 1
    # rank r gets exactly the global batches r, r + world, ... (before the even-out tail)
    glob = list(s)
    n = len(glob) // world
    assert [shards[r][:n] for r in range(world)] == [glob[r::world][:n] for r in range(world)]


def test_every_step_holds_one_modality_on_all_ranks():
    """A LLaVA-665K-like mix (about 6% text-only): each step's world_size batches share a modality."""
    rng = random.Random(5)
    n = 3000
    has_image = [rng.random() > 0.0625 for _ in range(n)]
    lengths = [rng.randint(50, 900) for _ in range(n)]
    for world, per_device in ((32, 4), (8, 3), (2, 1), (5, 7)):
        s = ModalityLengthGroupedSampler(lengths, has_image, batch_size=per_device, world_size=world, seed=1)
        batches = list(s)
        assert len(batches) == len(s) and len(batches) % world == 0
        steps = [batches[j:j + world] for j in range(0, len(batches), world)]
        for step in steps:
            assert len({has_image[i] for b in step for i in b}) == 1
            assert all(1 <= len(b) <= per_device for b in step)
        assert set(i for b in batches for i in b) == set(range(n))  # nothing left out


def test_fewer_samples_than_ranks_repeats_within_the_modality():
    s = ModalityLengthGroupedSampler([5, 6, 7, 8, 9], [True, True, True, False, False], batch_size=2, world_size=4)
    batches = list(s)
    assert len(batches) == len(s) == 8
    for j in range(0, 8, 4):
        step = batches[j:j + 4]
        assert all(len(b) == 1 for b in step) and len({s.has_image[b[0]] for b in step}) == 1
