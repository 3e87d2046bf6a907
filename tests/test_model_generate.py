import pytest
import torch

from model_helpers import Q, image
from tiny_models import build_random_tiny



@pytest.fixture(scope="module")
def tiny():
    return build_random_tiny(seed=0)


def test_greedy_generate_same_with_and_without_cache(tiny):
    model, proc = tiny
    g = proc.collate([proc.encode(Q, image(240, 160), add_generation_prompt=True, for_generation=True)], "left")
    assert g["images"][0].grid is not None  # large enough to be sliced
    kw = dict(input_ids=g["input_ids"], attention_mask=g["attention_mask"], images=g["images"],
              max_new_tokens=4, do_sample=False, eos_token_id=None)
    with torch.no_grad():
        a = model.generate(**kw, use_cache=True)
        b = model.generate(**kw, use_cache=False)
    assert a.shape[1] == g["input_ids"].shape[1] + 4
    assert torch.equal(a, b)


def test_left_padded_batch_generates_like_single(tiny):
    model, proc = tiny
    items = [proc.encode(Q, image(100, 80), add_generation_prompt=True),
             proc.encode([{"from": "human", "value": "How many objects are there?"}], add_generation_prompt=True)]
    kw = dict(max_new_tokens=6, do_sample=False, eos_token_id=None)
    with torch.no_grad():
        batch = proc.collate(items, "left")
        together = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                  images=batch["images"], **kw)[:, -6:]
        for i, it in enumerate(items):
            one = proc.collate([it], "left")
            alone = model.generate(input_ids=one["input_ids"], attention_mask=one["attention_mask"],
                                   images=one["images"], **kw)[:, -6:]
            assert torch.equal(together[i], alone[0])


def test_language_model_loop_matches_generate(tiny):
    """The candidate-generation engine's path: one prefill from embed_inputs, then its own loop."""
    model, proc = tiny
    g = proc.collate([proc.encode(Q, image(200, 300), add_generation_prompt=True)], "left")
    with torch.no_grad():
        ref = model.generate(input_ids=g["input_ids"], attention_mask=g["attention_mask"], images=g["images"],
                             max_new_tokens=5, do_sample=False, eos_token_id=None)[0, -5:]
        emb = model.embed_inputs(g["input_ids"], g["images"])
        out = model.language_model(inputs_embeds=emb, attention_mask=g["attention_mask"], use_cache=True)
        mask, past, toks = g["attention_mask"], out.past_key_values, []
        nxt = out.logits[:, -1].argmax(-1)
        for _ in range(5):
            toks.append(nxt)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = model.language_model(input_ids=nxt[:, None], attention_mask=mask, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1)
    assert torch.equal(torch.stack(toks, 1)[0], ref)


def test_num_return_sequences_and_beams_repeat_images(tiny):
    model, proc = tiny
    g = proc.collate([proc.encode(Q, image(150, 150), add_generation_prompt=True)], "left")
    with torch.no_grad():
        out = model.generate(input_ids=g["input_ids"], attention_mask=g["attention_mask"], images=g["images"],
                             max_new_tokens=3, do_sample=True, num_return_sequences=3, eos_token_id=None)
        beams = model.generate(input_ids=g["input_ids"], attention_mask=g["attention_mask"], images=g["images"],
                               max_new_tokens=3, num_beams=2, num_return_sequences=2, eos_token_id=None)
    assert out.shape[0] == 3 and beams.shape[0] == 2


def test_generate_never_emits_the_image_token(tiny):
    """A model whose logits favour `<image>` still generates: the token is suppressed, not sampled."""
    model, proc = tiny
    image_id = model.config.image_token_id

    def favour_image(module, inputs, logits):
        logits = logits.clone()
        logits[..., image_id] = 1e4
        return logits

    g = proc.collate([proc.encode(Q, image(240, 160), add_generation_prompt=True, for_generation=True)], "left")
    handle = model.language_model.lm_head.register_forward_hook(favour_image)
    try:
        with torch.no_grad():
            out = model.generate(input_ids=g["input_ids"], attention_mask=g["attention_mask"], images=g["images"],
                                 max_new_tokens=3, do_sample=False, eos_token_id=None, suppress_tokens=[0])
    finally:
        handle.remove()
    new = out[0, g["input_ids"].shape[1]:]
    assert len(new) == 3
    assert image_id not in new.tolist() and 0 not in new.tolist()
