"""The decode loop (prefill once, KV cache expanded N times) against transformers' own generate."""
import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from sicog.generate.engine import SamplingSettings, decode_candidates
from sicog.generate.sampling import choose_tokens, row_keys, uniforms

EOS = 3


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      eos_token_id=EOS, pad_token_id=0, initializer_range=0.2)
    return Qwen2ForCausalLM(cfg).eval()


def left_padded(lm, lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    ids = torch.zeros(len(lengths), t, dtype=torch.long)
    mask = torch.zeros(len(lengths), t, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, t - n:] = torch.randint(4, 64, (n,), generator=g)
        mask[i, t - n:] = 1
    return ids, mask, lm.get_input_embeddings()(ids).detach()


def test_greedy_equals_transformers_generate(lm):
    ids, mask, embeds = left_padded(lm, [5, 9, 7])
    s = SamplingSettings(num_candidates=2, temperature=0, max_new_tokens=12)
    keys = [row_keys(0, str(i), 2) for i in range(3)]
    ours = decode_candidates(lm, embeds, mask, keys, s, [EOS])
    ref = lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=12, do_sample=False,
                      eos_token_id=EOS, pad_token_id=0)
    for b in range(3):
        row = ref[b].tolist()
        row = row[:row.index(EOS)] if EOS in row else row
        assert ours[b][0] == row and ours[b][1] == row
        assert len(row) >= 1


def test_expanded_candidates_equal_single_candidate_runs(lm):
    ids, mask, embeds = left_padded(lm, [6, 4])
    s = SamplingSettings(num_candidates=3, temperature=1.0, top_p=0.95, max_new_tokens=10)
    keys = [row_keys(7, "a", 3), row_keys(7, "b", 3)]
    together = decode_candidates(lm, embeds, mask, keys, s, [EOS])
    assert len({tuple(c) for c in together[0]}) > 1  # sampling really differs across candidates
    for b, length in enumerate([6, 4]):
        alone_embeds = embeds[b:b + 1, -length:]
        alone_mask = mask[b:b + 1, -length:]
        for k in range(3):
            one = decode_candidates(lm, alone_embeds, alone_mask, [[keys[b][k]]], s, [EOS])
            assert one[0][0] == together[b][k]


def test_same_seed_same_candidates_other_seed_differs(lm):
    _, mask, embeds = left_padded(lm, [5, 5])
    s = SamplingSettings(num_candidates=2, temperature=1.0, top_p=1.0, max_new_tokens=8)
    a = decode_candidates(lm, embeds, mask, [row_keys(1, "x", 2), row_keys(1, "y", 2)], s, [EOS])
    b = decode_candidates(lm, embeds, mask, [row_keys(1, "x", 2), row_keys(1, "y", 2)], s, [EOS])
    c = decode_candidates(lm, embeds, mask, [row_keys(2, "x", 2), row_keys(2, "y", 2)], s, [EOS])
    assert a == b and a != c


def test_suppressed_tokens_are_never_generated(lm):
    _, mask, embeds = left_padded(lm, [5, 7])
    keys = [row_keys(0, "a", 4), row_keys(0, "b", 4)]
    s = SamplingSettings(num_candidates=4, temperature=1.5, top_p=1.0, max_new_tokens=12)
    free = decode_candidates(lm, embeds, mask, keys, s, [EOS])
    common = {t for cands in free for c in cands for t in c}
    banned = sorted(common)[:5]
    out = decode_candidates(lm, embeds, mask, keys, s, [EOS], suppress_token_ids=banned)
    assert not {t for cands in out for c in cands for t in c} & set(banned)


def test_min_new_tokens_suppresses_the_end_token(lm):
    _, mask, embeds = left_padded(lm, [4])
    lm_eos_everywhere = _AlwaysEos(lm)
    s = SamplingSettings(num_candidates=2, temperature=0.8, max_new_tokens=6, min_new_tokens=6)
    out = decode_candidates(lm_eos_everywhere, embeds, mask, [row_keys(0, "z", 2)], s, [EOS])
    assert [len(c) for c in out[0]] == [6, 6] and all(EOS not in c for c in out[0])
    s0 = SamplingSettings(num_candidates=2, temperature=0.8, max_new_tokens=6, min_new_tokens=0)
    assert decode_candidates(lm_eos_everywhere, embeds, mask, [row_keys(0, "z", 2)], s0, [EOS]) == [[[], []]]


class _AlwaysEos(torch.nn.Module):
    """Wraps an LM so the end token dominates every step."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, **kw):
        out = self.lm(**kw)
        out.logits[..., EOS] += 1e4
        return out


def test_choose_tokens_top_p_top_k_and_inverse_cdf():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]] * 4)
    u = torch.tensor([0.0, 0.5, 0.8, 0.999])
    assert choose_tokens(logits, u, 1.0, top_p=0.01).tolist() == [0, 0, 0, 0]
    assert choose_tokens(logits, u, 1.0, top_k=1).tolist() == [0, 0, 0, 0]
    assert choose_tokens(logits, u, 0.0).tolist() == [0, 0, 0, 0]
    p = torch.tensor([2.0, 1.0, 0.0, -1.0]).softmax(0).cumsum(0)
    expect = [int((p <= x).sum()) for x in u.tolist()]
    assert choose_tokens(logits, u, 1.0).tolist() == expect
    # top_p=0.9 removes the least likely token: u near 1 lands on the last kept one.
    kept = choose_tokens(logits[:1], torch.tensor([0.9999]), 1.0, top_p=0.9).item()
    assert kept == 2
    # u at the very top of [0, 1) never lands on a token removed by top_p
    top = torch.tensor([1.0 - 2.0 ** -53], dtype=torch.float64)
    assert choose_tokens(logits[:1], top, 1.0, top_p=0.9).item() == 2
    assert choose_tokens(logits[:1], top, 1.0).item() == 3


def test_uniforms_are_uniform_and_counter_based():
    keys = np.array(row_keys(0, "r", 4000), dtype=np.uint64)
    u0, u1 = uniforms(keys, 0), uniforms(keys, 1)
    assert ((u0 >= 0) & (u0 < 1)).all() and abs(u0.mean() - 0.5) < 0.03
    assert not np.array_equal(u0, u1)
    assert np.array_equal(uniforms(keys[10:20], 3), uniforms(keys, 3)[10:20])


@pytest.mark.parametrize("lengths", [[6, 4, 9], [5, 5]])  # left padding (a mask) and none (SDPA without one)
@pytest.mark.parametrize("check_every", [1, 3])
def test_buffered_qwen2_steps_give_the_models_own_candidates(lm, lengths, check_every):
    from sicog.generate.qwen2_steps import qwen2_decoder

    assert qwen2_decoder(lm) is lm.model  # the buffered path really runs
    _, mask, embeds = left_padded(lm, lengths)
    keys = [row_keys(3, str(i), 4) for i in range(len(lengths))]
    s = SamplingSettings(num_candidates=4, temperature=1.0, top_p=0.9, max_new_tokens=14, min_new_tokens=2)
    generic = decode_candidates(lm, embeds, mask, keys, s, [EOS], generic=True)
    assert decode_candidates(lm, embeds, mask, keys, s, [EOS], check_every=check_every) == generic
    sizes = [len(c) for cands in generic for c in cands]
    assert min(sizes) < 14 == max(sizes)  # some rows finished early and were dropped, others ran to the budget


def test_models_the_buffered_steps_cannot_run_use_their_own_forward():
    from sicog.generate.qwen2_steps import qwen2_decoder

    cfg = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, attn_implementation="eager")
    assert qwen2_decoder(Qwen2ForCausalLM(cfg)) is None
    assert qwen2_decoder(_AlwaysEos(Qwen2ForCausalLM(cfg))) is None


def test_buffered_steps_on_the_sicog_model_equal_its_own_forward():
    from generate_helpers import draw
    from sicog.generate.engine import eos_ids_of
    from tiny_models import build_random_tiny, spread_llm_weights

    model, processor = build_random_tiny(seed=0)
    spread_llm_weights(model)
    conv = [{"from": "human", "value": "<image>\nDescribe the image step-by-step."}]
    items = [processor.encode(conv, image=draw(i), add_generation_prompt=True, for_generation=True) for i in range(3)]
    batch = processor.collate(items, padding_side="left")
    assert not bool(batch["attention_mask"].all())  # images of other sizes: padded prompts
    keys = [row_keys(0, f"r{i}", 3) for i in range(3)]
    s = SamplingSettings(num_candidates=3, temperature=0.8, top_p=0.9, max_new_tokens=12)
    with torch.no_grad():
        embeds = model.embed_inputs(batch["input_ids"], batch["images"])
    args = (model, embeds, batch["attention_mask"], keys, s, eos_ids_of(model, processor.tokenizer),
            [processor.image_token_id])  # an image token has no image behind it: the engine suppresses it
    assert decode_candidates(*args) == decode_candidates(*args, generic=True)
