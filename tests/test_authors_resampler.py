"""The resampler against the authors' AdaptSpatialResampler_v1 (fixtures/authors/resampler)."""
import pytest
import torch
from authors_fixtures import AUTHORS, load_json
from safetensors.torch import load_file

from sicog.model.authors import CheckpointImportError, map_resampler
from sicog.model.resampler import SpatialResampler, pool_shape, sincos_table

CASES = load_json("resampler/cases.json")["configs"]


def authors_resampler(cfg: dict) -> SpatialResampler:
    kw = cfg["constructor_kwargs"]
    weights = load_file(str(AUTHORS / "resampler" / cfg["weights"]))
    mapped, _ = map_resampler(weights)
    r = SpatialResampler(query_grid=kw["grid_size"], embed_dim=kw["embed_dim"], kv_dim=kw["kv_dim"],
                         num_heads=kw["num_heads"])
    r.load_state_dict(mapped, strict=True)
    return r.eval()


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_equal_the_authors_module(name):
    cfg = CASES[name]
    r = authors_resampler(cfg)
    inputs = load_file(str(AUTHORS / "resampler" / cfg["inputs"]))
    outputs = load_file(str(AUTHORS / "resampler" / cfg["outputs"]))
    worst = 0.0
    for case in cfg["cases"]:
        x = inputs[case["key"]].view(case["batch"], case["h"], case["w"], -1)
        with torch.no_grad():
            out = r(x)
        ref = outputs[case["key"]]
        worst = max(worst, (out - ref).abs().max().item())
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert worst < 1e-4


@pytest.mark.parametrize("name", sorted(CASES))
def test_windows_and_point_grids_are_the_authors(name):
    cfg = CASES[name]
    r = authors_resampler(cfg)
    for case in cfg["cases"]:
        assert list(pool_shape(case["h"], case["w"])) == case["roi_output_size_hw"], case["key"]
        boxes = r.window_boxes(1, case["h"], case["w"], "cpu")
        assert torch.equal(boxes, torch.tensor(case["roi_boxes_first_batch_item"], dtype=torch.float32)), case["key"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_sincos_table_is_their_pos_embed(name):
    cfg = CASES[name]
    kw = cfg["constructor_kwargs"]
    pos = load_file(str(AUTHORS / "resampler" / cfg["weights"]))["pos_embed"]
    torch.testing.assert_close(sincos_table(kw["grid_size"], kw["embed_dim"]), pos, rtol=0, atol=1e-6)


def test_table_puts_the_column_half_first():
    t = sincos_table(4, 16).view(4, 4, 16)
    # moving along a row (column index j) changes the first half only
    assert torch.equal(t[0, 0, 8:], t[0, 3, 8:]) and not torch.equal(t[0, 0, :8], t[0, 3, :8])
    assert torch.equal(t[0, 0, :8], t[3, 0, :8]) and not torch.equal(t[0, 0, 8:], t[3, 0, 8:])


def test_pool_shapes_cover_2_to_4_points_per_side():
    for h in range(1, 40):
        for w in range(1, 40):
            ph, pw = pool_shape(h, w)
            assert 2 <= ph <= 4 and 2 <= pw <= 4 and 6 <= ph * pw <= 12
    assert pool_shape(1, 1000) == (2, 4) and pool_shape(1000, 1) == (4, 2)


def test_mapping_refuses_bad_tensors():
    weights = load_file(str(AUTHORS / "resampler" / "weights_grid4.safetensors"))
    with pytest.raises(CheckpointImportError, match="unknown .*extra"):
        map_resampler({**weights, "extra": torch.zeros(1)})
    with pytest.raises(CheckpointImportError, match="missing .*ln_q.bias"):
        map_resampler({k: v for k, v in weights.items() if k != "ln_q.bias"})
    with pytest.raises(CheckpointImportError, match="pos_embed differs"):
        map_resampler({**weights, "pos_embed": weights["pos_embed"] + 0.01})
