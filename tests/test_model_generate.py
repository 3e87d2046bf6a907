"""`generate()` with images: the tokens it chooses, against loops written out here."""
import pytest
import torch

from model_helpers import Q, image
from tiny_models import build_random_tiny, spread_llm_weights

NEW = 6


@pytest.fixture(scope="module")
def tiny():
    model, proc = build_random_tiny(seed=0)
    return spread_llm_weights(model), proc


def _batch(proc):
    """Two prompts, left-padded: one with a sliced image, one without an image."""
    items = [proc.encode(Q, image(240, 160), add_generation_prompt=True, for_generation=True),
             proc.encode([{"from": "human", "value": "How many objects are there?"}], add_generation_prompt=True)]
    g = proc.collate(items, "left")
    assert g["images"][0].grid is not None and g["images"][1] is None
    return items, g


def _generate(model, g, **kw):
    with torch.no_grad():
        out = model.generate(input_ids=g["input_ids"], attention_mask=g["attention_mask"], images=g["images"],
                             max_new_tokens=NEW, eos_token_id=None, **kw)
    prompt = g["input_ids"].repeat_interleave(out.shape[0] // len(g["input_ids"]), dim=0)
    assert torch.equal(out[:, :prompt.shape[1]], prompt)  # each prompt echoed for its own rows
    return out[:, prompt.shape[1]:]


def test_greedy_generate_equals_a_manual_argmax_loop(tiny):
    """Each step: the whole sequence through the model (no cache), the argmax of the last logits
    (`<image>` excluded, as generate suppresses it), appended."""
    model, proc = tiny
    _, g = _batch(proc)
    new = _generate(model, g, do_sample=False)
    ids, mask = g["input_ids"], g["attention_mask"]
    with torch.no_grad():
        for _ in range(NEW):
            logits = model(input_ids=ids, attention_mask=mask, images=g["images"]).logits[:, -1]
            logits[:, model.config.image_token_id] = float("-inf")
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    assert torch.equal(new, ids[:, g["input_ids"].shape[1]:])
    assert all(len(set(row)) > 1 for row in new.tolist())  # real sequences, not one repeated token


def test_greedy_generate_same_with_and_without_cache_and_alone(tiny):
    model, proc = tiny
    items, g = _batch(proc)
    cached = _generate(model, g, do_sample=False)
    assert torch.equal(_generate(model, g, do_sample=False, use_cache=False), cached)
    for i, item in enumerate(items):  # a left-padded row generates as it does alone
        assert torch.equal(_generate(model, proc.collate([item], "left"), do_sample=False)[0], cached[i])


def test_engine_greedy_decode_equals_generate(tiny):
    """The candidate engine's path: one prefill from embed_inputs, then its own cached loop."""
    from sicog.generate.engine import decode_candidates
    from sicog.generate.settings import SamplingSettings

    model, proc = tiny
    _, g = _batch(proc)
    settings = SamplingSettings(num_candidates=1, temperature=0.0, max_new_tokens=NEW)
    with torch.no_grad():
        embeds = model.embed_inputs(g["input_ids"], g["images"])
        tokens = decode_candidates(model, embeds, g["attention_mask"], [[0], [1]], settings, eos_token_ids=[],
                                   suppress_token_ids=[model.config.image_token_id])
    assert [rows[0] for rows in tokens] == _generate(model, g, do_sample=False).tolist()


def test_beams_and_returned_sequences_repeat_each_image_for_its_own_rows(tiny):
    """Beams (and returned sequences) expand the batch row by row: each row must keep its own image,
    so a batch searches as its rows do alone."""
    model, proc = tiny
    items = [proc.encode(Q, image(240, 160, seed=s), add_generation_prompt=True, for_generation=True) for s in (1, 2)]
    g = proc.collate(items, "left")
    beams = _generate(model, g, num_beams=3, num_return_sequences=2, do_sample=False)
    assert beams.shape == (4, NEW)
    for i, item in enumerate(items):
        alone = _generate(model, proc.collate([item], "left"), num_beams=3, num_return_sequences=2, do_sample=False)
        assert torch.equal(beams[2 * i:2 * i + 2], alone)
    assert not torch.equal(beams[:2], beams[2:])  # the two images lead to different searches
    torch.manual_seed(0)
    sampled = _generate(model, g, do_sample=True, num_return_sequences=3)
    assert sampled.shape == (6, NEW)


def test_generate_never_emits_the_image_token(tiny):
    """A model whose logits favour `<image>` still generates: the token is suppressed, not sampled."""
    model, proc = tiny
    image_id = model.config.image_token_id

    def favour_image(module, inputs, logits):
        logits = logits.clone()
        logits[..., image_id] = 1e4
        return logits

    _, g = _batch(proc)
    handle = model.lm_head.register_forward_hook(favour_image)
    try:
        new = _generate(model, g, do_sample=False, suppress_tokens=[0])
    finally:
        handle.remove()
    assert new.shape == (2, NEW)
    assert image_id not in new.flatten().tolist() and 0 not in new.flatten().tolist()
