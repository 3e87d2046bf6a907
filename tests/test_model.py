import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model_helpers import Q, image
from tiny_models import build_random_tiny
from sicog.model import ImageInput, SicogConfig, SicogForConditionalGeneration, SicogProcessor

CONV = Q + [{"from": "gpt", "value": "The square is blue."}]


@pytest.fixture(scope="module")
def tiny():
    return build_random_tiny(seed=0)


def test_forward_backward_reaches_every_part(tiny):
    model, proc = tiny
    batch = proc.collate([
        proc.encode(CONV, image(300, 200)),
        proc.encode([{"from": "human", "value": "hi"}, {"from": "gpt", "value": "Yes."}]),
        proc.encode(CONV, image(60, 90, seed=1)),
    ])
    model.train()
    model.zero_grad()
    out = model(**batch)
    model.eval()
    assert out.logits is None and torch.isfinite(out.loss)  # training: the loss only (sicog.model.loss)
    out.loss.backward()
    for name in ("model.vision_tower.embeddings.patch_embedding.weight",
                 "model.vision_tower.encoder.layers.0.mlp.fc1.weight",
                 "model.projector.query", "model.projector.kv_proj.weight", "model.projector.proj.weight",
                 "model.language_model.layers.0.self_attn.q_proj.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_image_features_change_the_output(tiny):
    model, proc = tiny
    a = proc.collate([proc.encode(CONV, image(200, 200, seed=1))])
    b = proc.collate([proc.encode(CONV, image(200, 200, seed=2))])
    with torch.no_grad():
        la, lb = model(**a).logits, model(**b).logits
    assert not torch.allclose(la[0, -5:], lb[0, -5:])


@pytest.mark.parametrize("size", [(1, 1), (1, 4000), (4000, 1), (37, 500), (500, 500), (1000, 130)])
def test_encode_and_forward_any_size(tiny, size):
    model, proc = tiny
    item = proc.encode(CONV, image(*size))
    assert len(item["input_ids"]) == proc.num_tokens(CONV, size)
    with torch.no_grad():
        out = model(**proc.collate([item]))
    assert torch.isfinite(out.loss)


def test_count_mismatch_raises(tiny):
    model, proc = tiny
    item = proc.encode(CONV, image(300, 200))
    other = proc.encode(CONV, image(50, 50))["images"]          # no slices: fewer features
    batch = proc.collate([item])
    with pytest.raises(ValueError, match="image-token positions"):
        model.embed_inputs(batch["input_ids"], [other])
    with pytest.raises(ValueError, match="image-token positions"):
        model.embed_inputs(batch["input_ids"], [None])
    with pytest.raises(ValueError, match="image entries"):
        model.embed_inputs(batch["input_ids"], [other, other])


def test_splice_places_features_in_layout_order(tiny):
    model, proc = tiny
    item = proc.encode(CONV, image(300, 200))
    ids = item["input_ids"][None]
    with torch.no_grad():
        emb = model.embed_inputs(ids, [item["images"]])
        feats = model.get_image_features([item["images"]])[0]
        sep = model.get_input_embeddings()(torch.tensor([proc.row_id, proc.overview_id]))
    mask = ids[0] == proc.image_token_id
    assert torch.equal(emb[0, mask], feats)
    assert torch.equal(emb[0, ids[0] == proc.overview_id][-1], sep[1])
    # the overview tokens come last; they equal the overview encoded alone
    with torch.no_grad():
        alone = model.model.encode_pixels(item["images"].overview[None])[0]
    torch.testing.assert_close(feats[-16:], alone, rtol=1e-4, atol=1e-5)
    # the first slice's first token row opens the raster
    with torch.no_grad():
        first = model.model.encode_pixels(item["images"].slices[:1])[0]
    torch.testing.assert_close(feats[:4], first[:4], rtol=1e-4, atol=1e-5)


def test_merge_gives_the_logits_of_the_in_place_write(tiny):
    """The features merged by `masked_scatter` give bit for bit the logits of the model before the
    base/head split: features written in place (`embeds[mask] = features`), then Qwen2ForCausalLM."""
    from transformers import Qwen2ForCausalLM

    from sicog.model.modeling import causal_lm_view

    model, proc = tiny
    batch = proc.collate([proc.encode(CONV, image(300, 200)),
                          proc.encode([{"from": "human", "value": "hi"}, {"from": "gpt", "value": "Yes."}]),
                          proc.encode(CONV, image(60, 90, seed=1))])
    lm = Qwen2ForCausalLM(model.config.text_config).eval()
    lm.load_state_dict(causal_lm_view(model).state_dict())
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
        features = model.get_image_features([batch["images"][0], batch["images"][2]])
        embeds[ids == proc.image_token_id] = torch.cat(features)
        ref = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
        ours = model(**batch).logits
    assert torch.equal(ours, ref)


def test_base_model_and_head_save_under_the_checkpoint_names(tmp_path, tiny):
    """LLaVA's shape in memory (`model` = SicogModel, `lm_head`); the saved names are those of the
    model before the split, so checkpoints written before and after it load alike."""
    import json

    from safetensors.torch import load_file

    from sicog.model.modeling import SicogModel, checkpoint_key, model_key

    model, _ = tiny
    assert isinstance(model.model, SicogModel) and isinstance(model.base_model, SicogModel)
    assert model.lm_head.weight is model.get_input_embeddings().weight  # the tiny tier ties them
    model.save_pretrained(tmp_path)
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert {k.split(".")[0] for k in saved} == {"vision_tower", "projector", "language_model"}
    assert "language_model.model.embed_tokens.weight" in saved and "language_model.lm_head.weight" not in saved
    assert {model_key(k) for k in saved} == set(model.state_dict()) - {"lm_head.weight"}
    assert all(torch.equal(v, model.state_dict()[model_key(k)]) for k, v in saved.items())
    assert checkpoint_key("model.language_model.norm.weight") == "language_model.model.norm.weight"
    assert checkpoint_key("lm_head.weight") == "language_model.lm_head.weight"
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["SicogForConditionalGeneration"]


@pytest.mark.parametrize("reentrant", [False, True])
def test_activation_checkpointing_with_a_frozen_llm_trains_the_projector(reentrant):
    """Checkpointing makes the token embeddings' output require grad (transformers' input hook); with
    the LLM frozen that output is a leaf, which the merge of the image features must not write to."""
    from sicog.train.stages import freeze

    model, proc = build_random_tiny(seed=7)
    freeze(model, "stage1")
    batch = proc.collate([proc.encode(CONV, image(250, 180))])
    model.train()
    model(**batch).loss.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.activation_checkpointing_enable({"use_reentrant": reentrant})
    model(**batch).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == ref.keys() and all(n.startswith("model.projector.") for n in grads)
    for name, g in grads.items():
        torch.testing.assert_close(g, ref[name], rtol=1e-4, atol=1e-6)


def test_save_load_round_trip(tmp_path, tiny):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

    model, proc = tiny
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    batch = proc.collate([proc.encode(CONV, image(300, 200))])
    with torch.no_grad():
        ref = model(**batch).logits
    assert AutoConfig.from_pretrained(tmp_path).model_type == "sicog"
    for auto in (AutoModelForImageTextToText, AutoModelForCausalLM):
        loaded = auto.from_pretrained(tmp_path)
        assert isinstance(loaded, SicogForConditionalGeneration)
        loaded.eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded(**batch).logits, ref)
    p2 = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(p2, SicogProcessor)
    assert torch.equal(p2.encode(CONV, image(300, 200))["input_ids"], batch["input_ids"][0])


def test_low_res_mlp_mode():
    model, proc = build_random_tiny(seed=1, projector_type="mlp")
    item = proc.encode(CONV, image(500, 80))
    assert item["images"].grid is None
    assert (item["input_ids"] == proc.image_token_id).sum() == (112 // 14) ** 2
    model.train()
    out = model(**proc.collate([item]))
    out.loss.backward()
    assert model.projector.linear_1.weight.grad.abs().sum() > 0
    assert model.vision_tower.embeddings.patch_embedding.weight.grad is not None


def test_config_validation():
    with pytest.raises(ValueError, match="projector_type"):
        SicogConfig(projector_type="qformer")
    with pytest.raises(ValueError, match="separator_token_ids"):
        SicogConfig(separator_token_ids=[13])
    cfg = SicogConfig(text_config={"hidden_size": 256, "num_attention_heads": 4}, separator_token_ids=[13, 29892])
    assert cfg.layout.tokens_per_image == 144 and cfg.patch_size == 14


def test_image_input_validates_shapes():
    with pytest.raises(ValueError):
        ImageInput(torch.zeros(3, 14, 14), torch.zeros(2, 3, 14, 14), None)
    with pytest.raises(ValueError):
        ImageInput(torch.zeros(3, 14, 14), torch.zeros(3, 3, 14, 14), (2, 2))


@settings(max_examples=6, deadline=None)
@given(st.integers(1, 700), st.integers(1, 700))
def test_model_features_match_processor_positions(tiny, w, h):
    model, proc = tiny
    item = proc.encode(CONV, image(w, h))
    with torch.no_grad():
        feats = model.get_image_features([item["images"]])[0]
    assert feats.shape == (int((item["input_ids"] == proc.image_token_id).sum()), model.config.text_config.hidden_size)


def test_gradient_checkpointing_gives_the_same_gradients():
    model, proc = build_random_tiny(seed=4)
    batch = proc.collate([proc.encode(CONV, image(250, 180))])
    model.train()
    loss = model(**batch).loss
    loss.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.activation_checkpointing_enable()
    loss2 = model(**batch).loss
    loss2.backward()
    torch.testing.assert_close(loss2, loss)
    for name in ("model.vision_tower.encoder.layers.0.mlp.fc1.weight", "model.projector.query",
                 "model.language_model.layers.1.mlp.up_proj.weight"):
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, ref[name], rtol=1e-4, atol=1e-6)


def test_bfloat16_forward():
    model, proc = build_random_tiny(seed=5)
    model.to(torch.bfloat16)
    batch = proc.collate([proc.encode(CONV, image(250, 180))])
    with torch.no_grad():
        out = model(**batch)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)


def test_projector_only_training_reaches_the_projector():
    """Stage 1 freezes the vision tower and the LLM by name: the spliced features still carry gradients."""
    model, proc = build_random_tiny(seed=6)
    for part in (model.vision_tower, model.language_model):
        part.requires_grad_(False)
    model.train()
    model(**proc.collate([proc.encode(CONV, image(250, 180))])).loss.backward()
    assert model.projector.query.grad is not None and model.projector.kv_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.language_model.parameters())
