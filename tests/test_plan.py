"""`sicog plan`: the memory formulas against hand-computed cases, exact paper-scale parameter
counts, steps per epoch for a data file, and the command as a user runs it."""
import json

import pytest

from cli_helpers import sicog
from sicog.train import memory
from sicog.train.memory import GIB, Launch, ModelShape

SMALL = ModelShape(params=1000, trainable=600, hidden=10, layers=2, kv_dim=4, intermediate=20, vocab=50,
                   vision_width=8, vision_layers=1, vision_intermediate=16, units_per_image=2, tokens_per_unit=5)
RUN = Launch(gpus=4, micro_batch=2, seq_len=8, zero=2, supervised_fraction=0.5)

# CLIP ViT-L/14-336 vision model: embeddings (patch conv 3*14*14*1024 + class 1024 + 577 positions
# x 1024) + pre-LN 2048 + 24 layers x 12,596,224 (4 attention projections with bias, 2 LNs, fc1, fc2)
# + post-LN 2048
CLIP_L_336 = 602_112 + 1_024 + 590_848 + 2_048 + 24 * 12_596_224 + 2_048
QWEN2_7B = 7_615_616_512  # published parameter count of Qwen2-7B(-Instruct), untied head
# resampler at width 3584: queries 144 x 3584, keys 1024 -> 3584 (no bias), 3 LNs, q/k/v/out with
# bias, final 3584 x 3584 without bias
RESAMPLER = 144 * 3584 + 1024 * 3584 + 3 * 2 * 3584 + 4 * (3584 * 3584 + 3584) + 3584 * 3584
UNUSED_TOWER = 12_596_224 + 2_048  # the last CLIP layer and post_layernorm never run (feature layer -2)


def test_each_row_by_hand():
    assert memory.weights(SMALL, RUN) == 2 * 1000
    # ZeRO-3: 2N/d + 2 bytes x (largest module V*h = 500, + prefetch bucket 0.9*h^2 = 90)
    assert memory.weights(SMALL, Launch(4, 2, 8, zero=3)) == pytest.approx(2 * 1000 / 4 + 2 * 590)
    assert memory.gradients(SMALL, RUN) == 2 * 600 / 4 + 2 * 10 * 10 * 2
    assert memory.optimizer_states(SMALL, RUN) == 12 * 600 / 4
    # 16 tokens: LLM checkpoints 2*16*10*2 = 640, one recomputed layer 2*16*(60+8+80)*2 = 9472;
    # vision: 2 samples x 2 units x 5 tokens = 20: 1*20*8*2 = 320 and 2*20*(48+32)*2 = 6400
    assert memory.activations(SMALL, RUN) == 640 + 9472 + 320 + 6400
    # 8 supervised rows: bf16 logits and gradient 2*8*50*2 = 1600, one fp32 chunk (8 rows) 3*8*50*4 = 4800
    assert memory.logits(SMALL, RUN) == 1600 + 4800
    table = memory.memory_table(SMALL, RUN)
    assert table["total"] == 2000 + 700 + 1800 + 16832 + 6400
    assert memory.full_logits(SMALL, RUN) == 16 * 50 * 10


def test_zero3_working_set_is_capped_by_max_live_parameters():
    run = Launch(gpus=4, micro_batch=2, seq_len=8, zero=3, max_live_parameters=100)
    assert memory.weights(SMALL, run) == 2 * 1000 / 4 + 2 * 100


def test_fits_leaves_ten_percent_headroom():
    assert memory.fits(72 * GIB, 80)
    assert not memory.fits(72 * GIB + 1, 80)


def test_steps_per_epoch():
    # LLaVA-665K on 32 GPUs x 4 per device, no accumulation: ceil(665,298 / 128)
    assert memory.steps_per_epoch(665_298, 4, 32, 1) == 5198
    # 10 records, 2 GPUs x 1, accumulation 4: 5 micro-steps per rank -> 2 optimizer steps
    assert memory.steps_per_epoch(10, 1, 2, 4) == 2


def test_paper_tier_counts_are_exact():
    from sicog.train.plan import model_shape, tier_config

    config = tier_config("paper")
    s2 = model_shape(config, "stage2")
    assert s2.params == CLIP_L_336 + QWEN2_7B + RESAMPLER
    assert s2.trainable == s2.params - UNUSED_TOWER
    assert (s2.hidden, s2.layers, s2.kv_dim, s2.intermediate, s2.vocab) == (3584, 28, 512, 18944, 152064)
    assert (s2.vision_layers, s2.units_per_image, s2.tokens_per_unit) == (23, 8, 577)
    assert model_shape(config, "stage1").trainable == RESAMPLER


def test_paper_stage2_zero2_by_hand():
    """The README's figures: 32 x A100-80GB, ZeRO-2, 4 per device x 4096 tokens."""
    rc, out = _plan("--tier", "paper", "--stage", "stage2", "--gpus", "32", "--gpu-memory", "80", "--json")
    assert rc == 0
    n = CLIP_L_336 + QWEN2_7B + RESAMPLER
    t = n - UNUSED_TOWER
    gib = out["memory_gib"]
    assert gib["weights"] == pytest.approx(2 * n / GIB)
    assert gib["optimizer states"] == pytest.approx(12 * t / 32 / GIB)
    assert gib["gradients"] == pytest.approx((2 * t / 32 + 4 * 3584**2) / GIB)
    # 8,192 supervised rows x 152,064: bf16 logits + gradient, and one fp32 chunk of 1,024 rows
    assert gib["logits"] == pytest.approx((4 * 8192 * 152064 + 12 * 1024 * 152064) / GIB)
    assert out["fits"] and out["accumulation"] == 1 and out["global_batch"] == 128


def _plan(*argv):
    """`sicog plan ARGV` in-process: (exit status, stdout + stderr), or the parsed JSON with --json."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc, err = sicog("plan", *argv)
    return rc, json.loads(buf.getvalue()) if "--json" in argv else buf.getvalue() + err


def test_command_prints_the_table_and_steps_for_a_data_file(tmp_path):
    data = tmp_path / "d.jsonl"
    rec = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    data.write_text("".join(json.dumps({"id": str(i), **rec}) + "\n" for i in range(1000)))
    rc, out = _plan("--tier", "paper", "--stage", "stage2", "--gpus", "32", "--gpu-memory", "80",
                    "--data", str(data), "--zero", "3")
    assert rc == 0, out
    for row in ("weights", "gradients", "optimizer states", "activations", "logits", "total"):
        assert row in out
    assert "ZeRO-3 over 32 GPUs" in out and "fits:" in out
    assert "4 per device x 32 GPUs x 1 accumulation = 128 global" in out
    assert "1,000 records -> 8 optimizer steps per epoch" in out  # ceil(1000 / 128)


def test_command_says_when_it_does_not_fit():
    rc, out = _plan("--tier", "paper", "--stage", "stage2", "--gpus", "8", "--gpu-memory", "24")
    assert rc == 1
    assert "does NOT fit" in out


def test_command_rejects_a_layout_that_cannot_make_the_global_batch():
    rc, out = _plan("--tier", "paper", "--stage", "stage2", "--gpus", "3")
    assert rc == 2
    assert "--gpus 3" in out and "not divisible" in out
