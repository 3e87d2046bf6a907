"""Stage freezing, the run config layers and the global-batch / accumulation derivation."""
import pytest
import yaml

from sicog.train.config import derive_accumulation, resolve_config
from sicog.train.stages import PARTS, STAGES, Stage, freeze, get_stage, register_stage


@pytest.fixture(scope="module")
def tiny_model():
    from tiny_models import build_random_tiny

    return build_random_tiny(seed=0)[0]


@pytest.mark.parametrize("stage, trainable", [
    ("stage0", set(PARTS)),
    ("stage1", {"projector"}),
    ("stage1_5", set(PARTS)),
    ("stage2", set(PARTS)),
])
def test_freeze_sets_exact_trainable_parts(tiny_model, stage, trainable):
    summary = freeze(tiny_model, stage)
    assert {p for p, info in summary.items() if info["trainable"]} == trainable
    unused = {id(p) for p in tiny_model.unused_vision_parameters().values()}  # tower layers that never run
    assert unused
    for part in PARTS:
        flags = {p.requires_grad for p in getattr(tiny_model, part).parameters() if id(p) not in unused}
        assert flags == {part in trainable}, part
        assert summary[part]["params"] == sum(p.numel() for p in getattr(tiny_model, part).parameters())
    assert not any(p.requires_grad for p in tiny_model.parameters() if id(p) in unused)
    n_trainable = sum(p.numel() for p in tiny_model.parameters() if p.requires_grad)
    assert n_trainable == sum(info["params"] - info.get("unused_frozen", 0)
                              for info in summary.values() if info["trainable"])


def test_stage_registry():
    assert get_stage("stage1").projector_only and not get_stage("stage1").slicing
    assert not get_stage("stage2").projector_only
    with pytest.raises(ValueError, match="unknown stage 'stage9'"):
        get_stage("stage9")
    with pytest.raises(ValueError, match="unknown parts"):
        register_stage(Stage("bad", ("decoder",), "x"))
    assert "bad" not in STAGES


def test_accumulation_derivation():
    assert derive_accumulation(128, 4, 32) == 1
    assert derive_accumulation(256, 8, 16) == 2
    assert derive_accumulation(16, 8, 1) == 2
    with pytest.raises(ValueError, match="global batch 128 is not divisible by per-device batch 3 x world size 2 = 6"):
        derive_accumulation(128, 3, 2)
    with pytest.raises(ValueError, match="per-device batch must be a positive integer"):
        derive_accumulation(128, 0, 2)


BASE = {"model_name_or_path": "m", "data_path": "d.jsonl", "output_dir": "out"}


def test_paper_profile_matches_spec():
    expected = {"stage0": (2e-5, 128), "stage1": (2e-4, 256), "stage1_5": (2e-5, 128), "stage2": (2e-5, 128)}
    for stage, (lr, batch) in expected.items():
        cfg = resolve_config({**BASE, "stage": stage, "profile": "paper"}, world_size=32)
        t = cfg.training
        assert (t["learning_rate"], cfg.global_batch_size) == (lr, batch)
        assert t["per_device_train_batch_size"] * 32 * t["gradient_accumulation_steps"] == batch
        assert (t["num_train_epochs"], t["lr_scheduler_type"], t["warmup_steps"], t["weight_decay"]) == (1, "cosine", 0.03, 0.0)
        assert cfg.model_max_length == 4096 and t["bf16"] and t["activation_checkpointing"]


def test_layers_yaml_then_flags(tmp_path):
    user = tmp_path / "run.yaml"
    user.write_text(yaml.safe_dump({"stage": "stage2", "learning_rate": 1.0e-4, "global_batch_size": 32,
                                    "save_steps": 7, **BASE}))
    cfg = resolve_config({"config": str(user), "learning_rate": 5e-5}, world_size=2)
    assert cfg.stage == "stage2" and cfg.profile == "tiny"
    assert cfg.training["learning_rate"] == 5e-5  # flag beats YAML
    assert cfg.training["save_steps"] == 7  # YAML beats profile
    assert cfg.training["gradient_accumulation_steps"] == 32 // (8 * 2)
    saved_path = cfg.save(tmp_path)
    saved = yaml.safe_load(saved_path.read_text())
    assert saved["training"]["learning_rate"] == 5e-5 and saved["world_size"] == 2
    again = resolve_config({"config": str(saved_path)}, world_size=2)  # the saved config re-runs as is
    assert again.to_dict() == cfg.to_dict()


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="no stage given"):
        resolve_config(BASE)
    with pytest.raises(ValueError, match=r"unknown settings \['learnin_rate'\]"):
        resolve_config({**BASE, "stage": "stage0", "learnin_rate": 1.0})
    with pytest.raises(ValueError, match="missing required setting 'data_path'"):
        resolve_config({"stage": "stage0", "model_name_or_path": "m", "output_dir": "o"})
    with pytest.raises(ValueError, match="gradient_accumulation_steps=3 disagrees with global batch 16"):
        resolve_config({**BASE, "stage": "stage0", "gradient_accumulation_steps": 3}, world_size=1)
    with pytest.raises(ValueError, match="not divisible"):
        resolve_config({**BASE, "stage": "stage0", "per_device_train_batch_size": 5}, world_size=1)
    with pytest.raises(ValueError, match="unknown profile"):
        resolve_config({**BASE, "stage": "stage0", "profile": "huge"})
    ok = resolve_config({**BASE, "stage": "stage0", "gradient_accumulation_steps": 2, "warmup_ratio": 0.1,
                         "gradient_checkpointing": True}, world_size=1)
    assert ok.training["gradient_accumulation_steps"] == 2 and ok.training["warmup_steps"] == 0.1
    assert ok.training["activation_checkpointing"] is True and "gradient_checkpointing" not in ok.training


def _counted_flops_per_token(lm, lengths: list[int]) -> float:
    """Training FLOPs per token of `lm` counted by torch: one forward and backward per sequence."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    total = 0
    for n in lengths:
        x = torch.randn(1, n, lm.config.hidden_size, requires_grad=True)
        with FlopCounterMode(display=False) as counter:
            lm(inputs_embeds=x).last_hidden_state.sum().backward()
        total += counter.get_total_flops()
    return total / sum(lengths)


def test_flops_per_token_equal_torchs_count():
    """`run_flops` against the matmul FLOPs torch counts in a forward and backward of the language
    model (eager attention, whose matmuls the counter sees): within the non-matmul parameters
    (biases, norms; 0.2% of the tiny model). Sequences of 4 and 60 tokens weigh attention by each
    token's own sequence length; the plain mean length would be off by 2%."""
    import torch

    from tiny_models import build_random_tiny

    from sicog.train.flops import run_flops

    model = build_random_tiny(seed=0)[0]
    model.language_model.set_attn_implementation("eager")
    for lengths in ([32], [4, 60]):
        ours, peak = run_flops(model, lengths, 2.0, torch.device("cpu"), bf16=False)
        assert peak == 2.0e12
        assert ours == pytest.approx(_counted_flops_per_token(model.language_model, lengths), rel=3e-3)


def test_mfu_of_a_timed_step_is_between_zero_and_one():
    """No step runs faster than the matmul peak: the MFU of a timed forward and backward is below 1."""
    import time

    import torch

    from tiny_models import build_random_tiny

    from sicog.train.flops import measure_matmul_peak, mfu, run_flops

    model = build_random_tiny(seed=0)[0]
    lm, n = model.language_model, 64
    peak = max(measure_matmul_peak("cpu", size=256, iters=5, warmup=1) for _ in range(2))
    assert peak > 1e6  # FLOP/s of a real matmul, not a placeholder
    flops_per_token, _ = run_flops(model, [n], 1.0, torch.device("cpu"), bf16=False)
    x = torch.randn(1, n, lm.config.hidden_size, requires_grad=True)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        lm(inputs_embeds=x).last_hidden_state.sum().backward()
        best = min(best, time.perf_counter() - start)
    assert 0 < mfu(n / best, flops_per_token, peak) < 1
    with pytest.raises(ValueError, match="positive"):
        mfu(1.0, 1.0, 0.0)


def test_attention_choice_falls_back_to_sdpa():
    import importlib.util

    import torch

    from sicog.train.loading import choose_attn_implementation

    flash = torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None
    assert choose_attn_implementation("auto") == ("flash_attention_2" if flash else "sdpa")
    assert choose_attn_implementation("eager") == "eager"


def test_part_learning_rate_errors(tmp_path):
    with pytest.raises(ValueError, match="mm_vision_tower_lr must be positive"):
        resolve_config({**BASE, "stage": "stage2", "mm_vision_tower_lr": 0})
    with pytest.raises(ValueError, match="mm_projector_lr must be a number"):
        resolve_config({**BASE, "stage": "stage2", "mm_projector_lr": "fast"})
    ds = tmp_path / "ds.json"
    ds.write_text('{"optimizer": {"type": "AdamW", "params": {"lr": 1e-4}}, "zero_optimization": {"stage": 2}}')
    with pytest.raises(ValueError, match="defines its own `optimizer`"):
        resolve_config({**BASE, "stage": "stage2", "mm_vision_tower_lr": 1e-5, "deepspeed": str(ds)})
    ok = resolve_config({**BASE, "stage": "stage2", "mm_vision_tower_lr": "2e-5"})
    assert ok.mm_vision_tower_lr == 2e-5 and ok.mm_projector_lr is None
