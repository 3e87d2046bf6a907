import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from sicog.model.slicing import best_grid, fit_area, slice_geometry, slice_image

PAPER = dict(max_slices=7, scale=336, patch=14)
TINY = dict(max_slices=4, scale=112, patch=14)

sizes = st.tuples(st.integers(1, 5000), st.integers(1, 5000))
params = st.sampled_from([PAPER, TINY, dict(max_slices=9, scale=448, patch=14), dict(max_slices=2, scale=64, patch=16)])


def _check_side(v, patch):
    assert v >= patch and v % patch == 0, (v, patch)


@settings(max_examples=400, deadline=None)
@given(sizes, params)
def test_geometry_sides_are_patch_multiples(size, p):
    geo = slice_geometry(*size, **p)
    for v in geo.overview_size:
        _check_side(v, p["patch"])
    area = geo.overview_size[0] * geo.overview_size[1]
    assert area <= p["scale"] ** 2 * 1.0001 + p["patch"] ** 2  # never far above the reference area
    if geo.grid is not None:
        cols, rows = geo.grid
        assert 2 <= cols * rows <= p["max_slices"]
        for v in geo.slice_size:
            _check_side(v, p["patch"])
        assert geo.refine_size == (geo.slice_size[0] * cols, geo.slice_size[1] * rows)
        assert size[0] * size[1] > p["scale"] ** 2  # only images larger than the reference are sliced
    else:
        assert geo.slice_size is None and geo.num_slices == 0


@settings(max_examples=60, deadline=None)
@given(st.tuples(st.integers(1, 1500), st.integers(1, 1500)))
def test_slice_image_matches_geometry(size):
    img = Image.new("RGB", size, (10, 20, 30))
    overview, slices, grid = slice_image(img, **TINY)
    geo = slice_geometry(*size, **TINY)
    assert overview.size == geo.overview_size
    assert grid == geo.grid
    assert len(slices) == geo.num_slices
    for s in slices:
        assert s.size == geo.slice_size


@pytest.mark.parametrize("size", [(1, 1), (1, 4000), (4000, 1), (14, 14), (5000, 3), (2, 5000)])
@pytest.mark.parametrize("p", [PAPER, TINY])
def test_extreme_sizes(size, p):
    overview, slices, grid = slice_image(Image.new("RGB", size), **p)
    for v in overview.size:
        _check_side(v, p["patch"])
    # area never explodes for extreme aspect ratios: at most the reference area (in whole patches)
    assert overview.size[0] * overview.size[1] <= p["scale"] ** 2
    for s in slices:
        for v in s.size:
            _check_side(v, p["patch"])


def test_small_image_is_upscaled_without_slices():
    # 100x50 at scale 336: area ~336^2 with aspect 2 -> 475x237 -> floored to 14-multiples
    geo = slice_geometry(100, 50, **PAPER)
    assert geo.grid is None
    h = math.floor(336 / math.sqrt(2))          # 237
    w = math.floor(h * 2)                       # 474
    assert geo.overview_size == (w // 14 * 14, h // 14 * 14) == (462, 224)


def test_grid_choice_follows_aspect_and_max_slices():
    # 1000x500 at paper scale: ratio 4.43 -> multiple 5 -> counts {4, 5, 6}; of their factorisations
    # [3, 2] (error |log 2 - log 1.5| = 0.29) beats [2, 2] and [4, 1] (0.69 each)
    assert best_grid(1000, 500, 5, 7) == (3, 2)
    # a square image with 4 slices: [2, 2]
    assert slice_geometry(672, 672, **PAPER).grid == (2, 2)
    # 1 is never a candidate: a 2x-area square picks among counts {2, 3}: [1, 2] first ([2, 1] ties)
    assert best_grid(475, 475, 2, 7) == (1, 2)
    # counts above max_slices are excluded
    assert best_grid(4000, 100, 7, 7)[0] * best_grid(4000, 100, 7, 7)[1] <= 7
    assert slice_geometry(4000, 3000, **TINY).num_slices <= 4


def test_slices_cover_image_row_major():
    # left half red, right half blue: slice (0,0) red, (1,0) blue in a 2x1 grid
    img = Image.new("RGB", (448, 224), (255, 0, 0))
    img.paste((0, 0, 255), (224, 0, 448, 224))
    _, slices, grid = slice_image(img, **TINY)
    assert grid[1] == 1 and grid[0] >= 2
    first, last = slices[0].getpixel((2, 2)), slices[-1].getpixel((slices[-1].width - 3, 2))
    assert first[0] > 200 and first[2] < 50
    assert last[2] > 200 and last[0] < 50


def test_fit_area_rejects_empty():
    with pytest.raises(ValueError):
        fit_area(0, 10, 336, 14)
    with pytest.raises(ValueError):
        slice_geometry(10, 0, **PAPER)


def _authors_refine(width, height, grid, scale, patch):
    """The refine size as the authors compute it (issue 14), written out independently.

    Returns None where a rescaled cell side falls below one patch (a cell aspect beyond
    (scale/patch)^2 : 1, 576:1 at paper scale): our documented exception.
    """
    cols, rows = grid
    cell_w = max(width // cols * cols, cols) / cols
    cell_h = max(height // rows * rows, rows) / rows
    r = cell_w / cell_h
    h = int(scale / math.sqrt(r))
    w = int(h * r)
    if min(w, h) < patch:
        return None
    return w // patch * patch * cols, h // patch * patch * rows


@settings(max_examples=3000, deadline=None)
@given(st.tuples(st.integers(1, 6000), st.integers(1, 6000)), st.sampled_from([PAPER, TINY]))
def test_refine_size_is_the_authors_formula(size, p):
    geo = slice_geometry(*size, **p)
    if geo.grid is not None:
        expected = _authors_refine(*size, geo.grid, p["scale"], p["patch"])
        assert expected is None or geo.refine_size == expected


def test_refine_size_over_ordinary_sizes():
    # every size from 340 to 3000 pixels per side in steps of 37 (4,624 images), none extreme
    checked = 0
    for w in range(340, 3000, 37):
        for h in range(340, 3000, 37):
            geo = slice_geometry(w, h, **PAPER)
            if geo.grid is not None:
                assert geo.refine_size == _authors_refine(w, h, geo.grid, 336, 14), (w, h)
                checked += 1
    assert checked > 4000


def test_wide_example_slices_like_the_authors():
    # 2794x741: 6x1 grid; 2794 floored to 2790 gives 465-pixel cells -> 266x420 slices (not 252x420)
    geo = slice_geometry(2794, 741, **PAPER)
    assert geo.grid == (6, 1)
    assert geo.slice_size == (266, 420)
