"""A tiny model in the authors' layout, run end to end against their forward (fixtures/authors/model)."""
import pytest
import torch
from authors_fixtures import AUTHORS, load_json
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoTokenizer, CLIPVisionConfig

from sicog.model import SicogProcessor
from sicog.model.authors import load_imported, sicog_config, write_imported

CFG = load_json("model/config.json")
CONV = [{"from": "human", "value": "<image>\nWhat shapes are in the image?"},
        {"from": "gpt", "value": "A red square and a blue circle."}]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    tensors = {k: v.float() for k, v in load_file(str(AUTHORS / "model" / "weights.safetensors")).items()}
    v = CFG["vision_config"]
    vision = CLIPVisionConfig(**{k: v[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                   "num_attention_heads", "image_size", "patch_size", "projection_dim")})
    theirs = {k: val for k, val in CFG["text_config"].items() if k != "model_type"}
    theirs["mm_vision_select_layer"] = CFG["mm_config"]["mm_vision_select_layer"]
    tok = AutoTokenizer.from_pretrained(str(AUTHORS / "template" / "tokenizer"))
    seps = [CFG["separator_ids"]["NEWLINE_TOKEN"], CFG["separator_ids"]["DOT_TOKEN"]]
    config = sicog_config(theirs, vision, tensors, tok.convert_tokens_to_ids("<image>"),
                          max_slices=CFG["slicing"]["max_slice_nums"], separator_token_ids=seps, eval_long_side=None)
    out = tmp_path_factory.mktemp("imported")
    rows = write_imported(config, tensors, out, torch.float32)
    assert len(rows) == len(tensors)
    model = load_imported(out)
    proc = SicogProcessor.from_config(config, tok)
    enc = proc.encode(CONV, Image.open(AUTHORS / "model" / "image.png").convert("RGB"))
    return model, proc, enc, load_file(str(AUTHORS / "model" / "outputs.safetensors"))


def test_config_follows_their_checkpoint(imported):
    model, _, _, _ = imported
    assert model.config.query_grid == 8 and model.projector.num_heads == 1
    assert model.config.vision_feature_layer == -2
    assert model.config.image_scale == 112


def test_pixels_equal_their_preprocessing(imported):
    _, _, enc, _ = imported
    im = enc["images"]
    assert list(im.grid) == CFG["slicing"]["best_grid_cols_rows"]
    units = {"overview": im.overview, "slice0": im.slices[0], "slice1": im.slices[1]}
    for name, t in units.items():
        ref = CFG["pixel_values"][name]
        assert list(t.shape) == ref["shape"]
        assert t.double().sum().item() == pytest.approx(ref["sum"], rel=1e-5)
        assert t.double().abs().sum().item() == pytest.approx(ref["abs_sum"], rel=1e-5)


def test_ids_and_labels_equal_theirs_after_expansion(imported):
    _, proc, enc, out = imported
    ids, labels = enc["input_ids"], enc["labels"]
    assert len(ids) == CFG["expanded_length"]
    start, n = CFG["image_start"], CFG["image_positions"]
    before, after = CFG["input_ids"][:start], CFG["input_ids"][start + 1:]
    assert ids[:start].tolist() == before and ids[start + n:].tolist() == after
    assert labels.tolist() == out["labels_expanded"].tolist()


def test_forward_equals_theirs(imported):
    model, _, enc, out = imported
    ids = enc["input_ids"][None]
    with torch.no_grad():
        embeds = model.embed_inputs(ids, [enc["images"]])[0]
        res = model(input_ids=ids, labels=enc["labels"][None], images=[enc["images"]])
    image_rows = ids[0] == model.config.image_token_id
    torch.testing.assert_close(embeds[~image_rows], out["inputs_embeds"][~image_rows], rtol=0, atol=1e-5)
    torch.testing.assert_close(embeds[image_rows], out["inputs_embeds"][image_rows], rtol=0, atol=1e-4)
    logits = res.logits[0, out["text_positions"]]
    torch.testing.assert_close(logits, out["logits_text_positions"], rtol=0, atol=1e-4)
    assert res.loss.item() == pytest.approx(out["loss"].item(), rel=1e-5)


def test_vision_features_equal_theirs(imported):
    model, _, enc, out = imported
    im = enc["images"]
    units = [im.slices[0], im.slices[1], im.overview]
    for k, pixels in enumerate(units):
        with torch.no_grad():
            feats = model.model.vision_features(pixels[None])[0]
        torch.testing.assert_close(feats, out[f"vision_features_unit{k}"], rtol=0, atol=1e-5)
