"""Compute precision: auto resolves by the hardware, bf16 autocast keeps fp32 master weights and
a loss close to fp32's, bf16 generation runs, and fp32 is what it always was."""
import json

import pytest
import torch
import yaml

import sicog.model.precision as P
from generate_helpers import draw
from model_helpers import Q, image
from train_fixtures import make_world, save_tiny_model, train


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(P.ENV_VAR, raising=False)  # the suite pins fp32 (conftest); these tests choose


@pytest.mark.parametrize("native, expect", [(True, "bf16"), (False, "fp32")])
def test_auto_follows_the_cpu(monkeypatch, caplog, native, expect):
    monkeypatch.setattr(P, "cpu_bf16_supported", lambda: native)
    P._logged.clear()
    with caplog.at_level("INFO", logger=P.__name__):
        assert P.resolve_precision("auto", "cpu") == expect
    assert f"precision auto -> {expect}" in caplog.text and "torch threads" in caplog.text
    assert P.resolve_precision("fp32", "cpu") == "fp32" and P.resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="auto|fp32|bf16"):
        P.resolve_precision("fp16", "cpu")


def test_environment_default(monkeypatch, no_env):
    assert P.default_precision() == "auto"
    monkeypatch.setenv(P.ENV_VAR, "BF16")
    assert P.default_precision() == "bf16"
    monkeypatch.setenv(P.ENV_VAR, "half")
    with pytest.raises(ValueError, match=P.ENV_VAR):
        P.default_precision()


@pytest.mark.parametrize("native", [True, False])
def test_training_settings_follow_precision(monkeypatch, no_env, native):
    from sicog.train.cli import _apply_precision
    from sicog.train.config import resolve_config

    monkeypatch.setattr(P, "cpu_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    base = {"stage": "stage2", "model_name_or_path": "m", "data_path": "d", "output_dir": "o"}

    def resolved(**over):
        cfg = resolve_config({**base, **over}, world_size=1)
        _apply_precision(cfg)
        return cfg.precision, cfg.training["bf16"], cfg.training.get("use_cpu", False)

    assert resolved() == (("bf16", True, True) if native else ("fp32", False, False))
    assert resolved(precision="fp32") == ("fp32", False, False)
    assert resolved(precision="bf16") == ("bf16", True, True)
    assert resolved(bf16=False) == ("fp32", False, False)  # the familiar flag decides under auto
    monkeypatch.setenv(P.ENV_VAR, "fp32")
    assert resolved()[0] == "fp32" and resolved(precision="bf16")[0] == "bf16"  # flags beat the variable
    monkeypatch.setenv(P.ENV_VAR, "bf16")
    assert resolved(deepspeed={"zero_optimization": {"stage": 2}})[0] == "bf16"
    monkeypatch.delenv(P.ENV_VAR)
    assert resolved(deepspeed={"zero_optimization": {"stage": 2}})[0] == "fp32"  # auto: DeepSpeed casts weights
    with pytest.raises(ValueError, match="precision"):
        resolve_config({**base, "precision": "fp16"})


def _batch(processor):
    from sicog.data.collator import TrainCollator

    items = []
    for i, (w, h) in enumerate([(112, 112), (224, 112), (98, 154)]):
        conv = [*Q, {"from": "gpt", "value": "A red square above a blue circle, " * (i + 1)}]
        items.append(processor.encode(conv, image=image(w, h, seed=i)))
    items.append(processor.encode([{"from": "human", "value": "Say something."},
                                   {"from": "gpt", "value": "Something about shapes."}]))
    return TrainCollator(processor)(items)


def test_bf16_step_keeps_fp32_master_weights_and_a_close_loss():
    from tiny_models import build_random_tiny

    model, processor = build_random_tiny(seed=0)
    model.train()
    batch = _batch(processor)
    losses, grads = {}, {}
    for precision in ("fp32", "bf16"):
        model.zero_grad(set_to_none=True)
        with P.autocast(precision, "cpu"):
            loss = model(**batch).loss
        loss.backward()
        losses[precision] = loss.item()
        grads[precision] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    assert torch.isfinite(torch.tensor(losses["bf16"]))
    assert abs(losses["bf16"] - losses["fp32"]) / losses["fp32"] < 0.01
    cos = torch.nn.functional.cosine_similarity(grads["bf16"], grads["fp32"], dim=0)
    assert cos > 0.99
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt.step()  # the update lands on the fp32 weights
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_sicog_train_in_bf16_through_the_trainer(tmp_path, monkeypatch, no_env):
    from safetensors.torch import load_file

    model = save_tiny_model(tmp_path / "model")
    data = make_world(tmp_path / "world", n_image=3, n_text=1, sizes=((112, 112),))
    out = tmp_path / "out"
    assert train("--stage", "stage2", "--model_name_or_path", str(model), "--data_path", str(data),
                 "--output_dir", str(out), "--global_batch_size", "2", "--per_device_train_batch_size", "2",
                 "--max_steps", "2", "--precision", "bf16", "--save_strategy", "no") == 0
    saved = yaml.safe_load((out / "train_config.yaml").read_text())
    assert saved["precision"] == "bf16" and saved["training"]["bf16"] is True
    logged = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in logged if "loss" in x]
    assert len(losses) == 2 and all(0 < v < 100 for v in losses)
    assert all(t.dtype == torch.float32 for t in load_file(out / "model.safetensors").values())


def _engine_inputs(processor, n=3):
    conv = [{"from": "human", "value": "<image>\nDescribe the image step-by-step."}]
    return [processor.encode(conv, image=draw(i), add_generation_prompt=True, for_generation=True) for i in range(n)]


def test_generation_in_bf16_runs_and_fp32_is_unchanged():
    from sicog.generate.engine import CandidateEngine, SamplingSettings, decode_candidates
    from sicog.generate.sampling import row_keys
    from tiny_models import build_random_tiny, spread_llm_weights

    model, processor = build_random_tiny(seed=0)
    spread_llm_weights(model)  # context-dependent output
    items = _engine_inputs(processor)
    ids = [f"r{i}" for i in range(len(items))]
    s = SamplingSettings(num_candidates=3, temperature=0.8, top_p=0.9, max_new_tokens=10, seed=1)
    fp32 = CandidateEngine(model, processor, s).generate_ids(ids, items)
    # fp32: the engine's decode, called by hand with no precision machinery around it
    batch = processor.collate(items, padding_side="left")
    eos = CandidateEngine(model, processor, s).eos_ids
    with torch.no_grad():
        embeds = model.embed_inputs(batch["input_ids"], batch["images"])
        by_hand = decode_candidates(model, embeds, batch["attention_mask"],
                                    [row_keys(1, r, 3) for r in ids], s, eos, [processor.image_token_id])
    assert fp32 == by_hand
    assert CandidateEngine(model, processor, s, precision="fp32").generate_ids(ids, items) == fp32
    bf16 = CandidateEngine(model, processor, s, precision="bf16").generate_ids(ids, items)
    assert [len(c) for c in bf16] == [3, 3, 3] and all(1 <= len(t) <= 10 for c in bf16 for t in c)
    with pytest.raises(ValueError, match="resolved precision"):
        CandidateEngine(model, processor, s, precision="auto")


def test_evaluation_generator_in_bf16(tmp_path):
    from sicog.evaluate.generation import GreedyGenerator
    from sicog.evaluate.settings import load_eval_config
    from tiny_models import build_random_tiny

    model, processor = build_random_tiny(seed=0)
    cfg = load_eval_config("v1")
    gen = GreedyGenerator(model, processor, cfg, device="cpu", precision="bf16")
    items = [gen.encode("<image>\nWhat colour is the circle?", draw(i)) for i in range(2)]
    texts = gen.generate(items, "qa")
    assert len(texts) == 2 and gen.new_tokens > 0
