import pytest
import torch

from tiny_models import build_random_tiny
from sicog.model.resampler import SpatialResampler, key_positions, sincos_table


@pytest.fixture(scope="module")
def resampler():
    torch.manual_seed(0)
    r = SpatialResampler(query_grid=4, embed_dim=64, kv_dim=48, num_heads=2)
    torch.nn.init.normal_(r.query, std=0.5)
    return r.eval()


@pytest.mark.parametrize("hw", [(8, 8), (1, 1), (1, 60), (60, 1), (6, 9), (13, 5)])
def test_any_map_size_gives_q_squared_tokens(resampler, hw):
    with torch.no_grad():
        out = resampler(torch.randn(3, *hw, 48))
    assert out.shape == (3, 16, 64) and torch.isfinite(out).all()


def test_each_query_sees_only_its_window(resampler):
    x = torch.randn(1, 8, 8, 48)
    y = x.clone()
    y[0, 2:4, 4:6] += 5.0          # the window at row 1, column 2 of the 4x4 window grid (2x2 patches each)
    with torch.no_grad():
        delta = (resampler(x)[0] - resampler(y)[0]).abs().amax(dim=1).view(4, 4)
    assert delta.argmax().item() == 1 * 4 + 2
    # bilinear ROI sampling reads at most one patch across a window border: windows that are not
    # neighbours of the changed one do not move at all
    for i in range(4):
        for j in range(4):
            if max(abs(i - 1), abs(j - 2)) > 1:
                assert delta[i, j] == 0, (i, j)


def test_maps_in_a_batch_are_independent(resampler):
    x = torch.randn(2, 6, 10, 48)
    with torch.no_grad():
        both = resampler(x)
        one = resampler(x[1:])
    torch.testing.assert_close(both[1:], one, rtol=1e-5, atol=1e-6)


def test_key_positions_resize_the_query_table():
    table = sincos_table(4, 32).view(4, 4, 32)
    # at the table's own size the bicubic resize is the identity
    torch.testing.assert_close(key_positions(4, 32, 4, 4), table)
    big = key_positions(4, 32, 8, 12)
    assert big.shape == (8, 12, 32)
    # a row of the map keeps the row half (second half) constant along it
    torch.testing.assert_close(big[3, 0, 16:], big[3, 11, 16:])


def test_vision_features_equal_clip_hidden_state():
    model, _ = build_random_tiny(seed=3)
    pixels = torch.randn(2, 3, 70, 126)
    with torch.no_grad():
        ours = model.model.vision_features(pixels)
        ref = model.vision_tower(pixel_values=pixels, output_hidden_states=True,
                                 interpolate_pos_encoding=True).hidden_states[-2][:, 1:]
    assert ours.shape == (2, 5 * 9, model.config.vision_config.hidden_size)
    torch.testing.assert_close(ours, ref)


def test_vision_feature_layer_out_of_range():
    model, _ = build_random_tiny(seed=0, vision_feature_layer=-9)
    with pytest.raises(ValueError, match="out of range"):
        model.model.vision_features(torch.randn(1, 3, 28, 28))
