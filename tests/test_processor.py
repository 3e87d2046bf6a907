import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tiny_models import build_random_tiny, builtin_tokenizer
from sicog.data.template import IGNORE_INDEX
from sicog.model import ImageLoadError, SicogProcessor
from sicog.model.layout import ImageLayout

Q = [{"from": "human", "value": "<image>\nWhat colour is the square?"}]
CONV = Q + [{"from": "gpt", "value": "The square is blue."}]


@pytest.fixture(scope="module")
def tok():
    return builtin_tokenizer()


@pytest.fixture(scope="module")
def proc(tok):
    return SicogProcessor(tok, ImageLayout(image_scale=112, patch_size=14, max_slices=4, query_grid=4, eval_long_side=448))


def test_load_image_errors(tmp_path, proc):
    with pytest.raises(ImageLoadError, match="not found"):
        proc.load_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty"):
        proc.load_image(tmp_path / "empty.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    with pytest.raises(ImageLoadError, match="cannot decode"):
        proc.load_image(tmp_path / "bad.jpg")
    good = Image.new("RGBA", (20, 10), (1, 2, 3, 4))
    png = tmp_path / "truncated.png"
    good.save(png)
    png.write_bytes(png.read_bytes()[:40])
    with pytest.raises(ImageLoadError):
        proc.load_image(png)
    assert issubclass(ImageLoadError, ValueError)
    ok = tmp_path / "ok.png"
    good.save(ok)
    im = proc.load_image(ok)
    assert im.mode == "RGB" and im.size == (20, 10)


def test_image_marker_mismatch_raises(proc):
    img = Image.new("RGB", (50, 50))
    with pytest.raises(ValueError, match="no image"):
        proc.encode(CONV)
    text_only = [{"from": "human", "value": "What colour?"}, {"from": "gpt", "value": "Blue."}]
    with pytest.raises(ValueError, match="no human turn contains"):
        proc.encode(text_only, img)
    two = [{"from": "human", "value": "<image>\n<image>\nhi"}, {"from": "gpt", "value": "x"}]
    with pytest.raises(ValueError, match="at most one"):
        proc.encode(two, img)
    with pytest.raises(ValueError, match="no image"):
        proc.num_tokens(CONV)


def test_expansion_layout_and_labels(proc, tok):
    img = Image.new("RGB", (300, 150), (9, 9, 9))
    item = proc.encode(CONV, img)
    grid = item["images"].grid
    assert grid is not None
    cols, rows = grid
    ids, labels = item["input_ids"].tolist(), item["labels"].tolist()
    image_id = tok.convert_tokens_to_ids("<image>")
    start = ids.index(image_id)
    n = proc.layout.num_positions(grid)
    span = ids[start:start + n]
    assert span.count(image_id) == (cols * rows + 1) * 16
    row_len = cols * 4 + 1
    nl, comma = tok.encode("\n")[0], tok.encode(",")[0]
    for r in range(rows * 4):
        assert span[r * row_len:(r + 1) * row_len] == [image_id] * (cols * 4) + [nl]
    assert span[rows * 4 * row_len] == comma
    assert span[rows * 4 * row_len + 1:] == [image_id] * 16
    # every image and separator position is unsupervised, even `\n` in the authors' mode
    assert all(lab == IGNORE_INDEX for lab in labels[start:start + n])
    assert ids[start + n] == nl and labels[start + n] == nl  # the `\n` after `<image>` in the text
    assert item["images"].slices.shape == (cols * rows, 3, *item["images"].slices.shape[-2:])


def test_separator_ids_override(tok):
    p = SicogProcessor(tok, ImageLayout(image_scale=112, patch_size=14, max_slices=4, query_grid=4),
                       separator_token_ids=[5, 7])
    item = p.encode(CONV, Image.new("RGB", (300, 150)))
    ids = item["input_ids"].tolist()
    rows = item["images"].grid[1]
    assert ids.count(5) == rows * 4 and ids.count(7) == 1  # one per token row, one before the overview
    with pytest.raises(ValueError, match="row_id, overview_id"):
        SicogProcessor(tok, separator_token_ids=[1, 2, 3])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 900), st.integers(1, 900), st.booleans(), st.booleans())
def test_num_tokens_equals_encode(proc, w, h, for_generation, gen_prompt):
    conv = Q if gen_prompt else CONV
    item = proc.encode(conv, Image.new("RGB", (w, h)), add_generation_prompt=gen_prompt, for_generation=for_generation)
    n = proc.num_tokens(conv, (w, h), add_generation_prompt=gen_prompt, for_generation=for_generation)
    assert n == len(item["input_ids"]) == len(item["labels"])
    assert (item["input_ids"] == proc.image_token_id).sum() == proc.layout.num_features(item["images"].grid)


def test_eval_long_side_only_for_generation(proc):
    img = Image.new("RGB", (120, 90))  # small: not sliced in training; long side 448 at generation is
    train = proc.encode(CONV, img)["images"]
    gen = proc.encode(Q, img, add_generation_prompt=True, for_generation=True)["images"]
    assert train.grid is None and gen.grid is not None
    off = SicogProcessor(proc.tokenizer, ImageLayout(image_scale=112, patch_size=14, max_slices=4, query_grid=4,
                                                     eval_long_side=None))
    a = off.encode(CONV, img)["images"]
    b = off.encode(Q, img, add_generation_prompt=True, for_generation=True)["images"]
    assert a.grid == b.grid and a.overview.shape == b.overview.shape


def test_mlp_layout_counts(tok):
    p = SicogProcessor(tok, ImageLayout(projector_type="mlp", image_scale=112, patch_size=14))
    item = p.encode(CONV, Image.new("RGB", (500, 40), (255, 0, 0)))
    assert item["images"].grid is None and item["images"].overview.shape == (3, 112, 112)
    # padded to a square with the mean colour (normalised to ~0), the image band in the middle
    ov = item["images"].overview
    assert ov[:, 0].abs().max() < 0.05 and ov[:, -1].abs().max() < 0.05
    assert ov[0, 56].mean() > 1.0
    assert (item["input_ids"] == p.image_token_id).sum() == 64
    assert p.num_tokens(CONV, (500, 40)) == len(item["input_ids"])


def test_collate_padding_sides(proc):
    a = proc.encode(CONV, Image.new("RGB", (60, 60)))
    b = proc.encode([{"from": "human", "value": "hi"}, {"from": "gpt", "value": "Yes."}])
    la, lb = len(a["input_ids"]), len(b["input_ids"])
    right = proc.collate([a, b])
    assert right["input_ids"].shape == (2, la) and right["attention_mask"][1].sum() == lb
    assert right["attention_mask"][1, :lb].all() and not right["attention_mask"][1, lb:].any()
    assert (right["labels"][1, lb:] == IGNORE_INDEX).all()
    left = proc.collate([a, b], padding_side="left")
    assert torch.equal(left["input_ids"][1, la - lb:], b["input_ids"])
    assert not left["attention_mask"][1, : la - lb].any()
    assert right["images"][0] is a["images"] and right["images"][1] is None
    with pytest.raises(ValueError):
        proc.collate([a], padding_side="middle")


def test_save_load_round_trip(tmp_path):
    _, p = build_random_tiny(seed=0)
    p.save_pretrained(tmp_path)
    q = SicogProcessor.from_pretrained(tmp_path)
    img = Image.new("RGB", (333, 222), (40, 90, 200))
    x, y = p.encode(CONV, img), q.encode(CONV, img)
    assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["labels"], y["labels"])
    assert torch.allclose(x["images"].slices, y["images"].slices)
    assert q.layout == p.layout and q.mask_mode == "authors"
    assert SicogProcessor.from_pretrained(tmp_path, mask_mode="assistant").mask_mode == "assistant"


def test_paper_layout_counts():
    """Paper scale by hand: 12x12 queries, 336 scale, 7 slices at most."""
    paper = ImageLayout()
    assert paper.grid((336, 336)) is None and paper.num_positions(None) == 144
    # 672x672: ratio 4 -> counts {3, 4, 5} -> [2, 2]; 4*144 slice tokens + 144 overview tokens,
    # 24 token rows each closed by a separator, one more separator before the overview
    assert paper.grid((672, 672)) == (2, 2)
    assert paper.num_features((2, 2)) == 720 and paper.num_positions((2, 2)) == 745
    # a 4:1 image: one row of four slices, 12 token rows of 48 tokens
    assert paper.grid((1344, 336)) == (4, 1) and paper.num_positions((4, 1)) == 4 * 144 + 144 + 12 + 1
    assert ImageLayout(projector_type="mlp").num_positions(None) == 576


def test_pixels_normalised_with_config_mean_std(proc):
    item = proc.preprocess(Image.new("RGB", (56, 56), (255, 128, 0)))
    expected = [(255 / 255 - 0.48145466) / 0.26862954, (128 / 255 - 0.4578275) / 0.26130258,
                (0 - 0.40821073) / 0.27577711]
    got = item.overview.mean(dim=(1, 2)).tolist()
    assert got == pytest.approx(expected, abs=1e-3)
    assert item.overview.shape == (3, 112, 112)   # upscaled to area ~112^2
