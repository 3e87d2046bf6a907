"""Slicing geometry and the token layout at `<image>` against the authors' code (fixtures/authors/layout)."""
import pytest
from authors_fixtures import load_json

from sicog.model.layout import ImageLayout
from sicog.model.slicing import slice_geometry

CASES = load_json("layout/cases.json")["cases"]
IMAGE = -200        # the fixture's marker of an image-feature position


def layout_of(case) -> ImageLayout:
    return ImageLayout(image_scale=case["scale_resolution"], patch_size=case["patch_size"],
                       max_slices=case["max_slice_nums"], query_grid=case["query_grid"])


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_geometry_equals_the_authors(case):
    w, h = case["image_size_wh"]
    geo = slice_geometry(w, h, case["max_slice_nums"], case["scale_resolution"], case["patch_size"])
    assert list(geo.overview_size) == case["overview_size_wh"]
    assert (list(geo.grid) if geo.grid else None) == case["best_grid_cols_rows"]
    slices = [list(geo.slice_size)] * geo.num_slices if geo.grid else []
    assert slices == (case["slice_sizes_wh"] or [])


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_layout_sequence_equals_the_authors(case):
    lay = layout_of(case)
    grid = lay.grid(tuple(case["image_size_wh"]))
    ids = lay.expand(grid, IMAGE, 13, 29892)
    assert ids == case["ids"]
    assert lay.num_positions(grid) == case["length"]
    assert lay.num_features(grid) == case["n_units"] * case["tokens_per_unit"]


def test_one_column_grids_use_the_row_separator_before_the_overview():
    lay = ImageLayout(image_scale=112, patch_size=14, max_slices=4, query_grid=4)
    for grid in [(1, 2), (1, 3)]:
        ids = lay.expand(grid, 0, 1, 2)
        assert ids[-17] == 1 and 2 not in ids
    assert lay.expand((2, 1), 0, 1, 2)[-17] == 2
