"""`sicog plan`: will a training launch fit, and how many steps is an epoch? Printed before any GPU is used.

    sicog plan --tier paper --stage stage2 --gpus 32 --gpu-memory 80 [--data FILE] [--zero 2|3]

Prints per-GPU memory (weights, gradients, optimizer states under the ZeRO stage, activations
with gradient checkpointing, logits of the supervised-only loss; formulas in
`sicog.train.memory`), the batch arithmetic of the stage (configs/stages/<profile>.yaml), the
steps per epoch for a data file, and whether it fits. Exit status 0 when it fits, 1 when not.

Parameter counts are exact: the model is built on PyTorch's `meta` device (no memory, no
weights read) from the tier's shapes (the paper tier: CLIP ViT-L/14-336 + Qwen2-7B-Instruct, as
their published configs give them), or from a saved model folder's config (`--model`).
"""
from __future__ import annotations

import argparse
import json

import torch

from sicog.data.checks import InputError, add_flag, check_input_dir, check_input_file
from sicog.train import memory
from sicog.train.memory import GIB, Launch, ModelShape

# The published configs of the paper's two parts (clip-vit-large-patch14-336, Qwen2-7B-Instruct).
PAPER_VISION = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    image_size=336, patch_size=14, projection_dim=768)
PAPER_TEXT = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                  num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768,
                  rope_theta=1000000.0, tie_word_embeddings=False)
TINY_VOCAB = 4096  # the mini world's tokenizer (sicog.world.tokenizer)


def tier_config(tier: str):
    """SicogConfig of a tier (`paper` or `tiny`) from its shapes."""
    from transformers import CLIPVisionConfig, Qwen2Config

    from sicog.model.configuration import SicogConfig
    from sicog.model.tiers import load_tier

    spec = load_tier(tier)
    if tier == "paper":
        vision, text = PAPER_VISION, PAPER_TEXT
    else:
        vision, text = spec["vision"], {"vocab_size": TINY_VOCAB, **spec["text"]}
    fields = {k: v for k, v in spec["model"].items() if k != "patch_size"}
    return SicogConfig(vision_config=CLIPVisionConfig(**vision), text_config=Qwen2Config(**text), **fields)


def model_shape(config, stage_name: str) -> ModelShape:
    """Exact parameter counts (a meta-device model) and the sizes `sicog.train.memory` needs."""
    from sicog.model.modeling import SicogForConditionalGeneration
    from sicog.train.stages import freeze

    with torch.device("meta"):
        model = SicogForConditionalGeneration(config)
    freeze(model, stage_name)
    text, vision = config.text_config, config.vision_config
    units = 1 + (config.max_slices if config.projector_type == "resampler" else 0)
    return ModelShape(
        params=sum(p.numel() for p in model.parameters()),
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        hidden=text.hidden_size, layers=text.num_hidden_layers,
        kv_dim=text.num_key_value_heads * (text.hidden_size // text.num_attention_heads),
        intermediate=text.intermediate_size, vocab=text.vocab_size,
        vision_width=vision.hidden_size, vision_layers=model.model.num_vision_layers,
        vision_intermediate=vision.intermediate_size, units_per_image=units,
        tokens_per_unit=(config.image_scale // vision.patch_size) ** 2 + 1,
    )


def count_records(path: str) -> int:
    """Training records in a LLaVA JSON/JSONL file or a mixture YAML (entries, not checked)."""
    from sicog.data.mixture import load_data

    return len(load_data(path))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tier", default="paper", choices=["paper", "tiny"],
                        help="model shapes and stage settings (configs/stages/<tier>.yaml)")
    parser.add_argument("--model", help="a saved SICOG model folder: its config.json replaces the tier's shapes")
    parser.add_argument("--stage", default="stage2", help="stage0 | stage1 | stage1_5 | stage2 | dpo")
    parser.add_argument("--gpus", type=int, default=32, help="GPUs in all (data-parallel ranks)")
    parser.add_argument("--gpu-memory", type=float, default=80.0, help="GiB per GPU")
    parser.add_argument("--zero", type=int, default=2, choices=[2, 3], help="DeepSpeed ZeRO stage")
    parser.add_argument("--data", help="data file: steps per epoch from its record count")
    parser.add_argument("--per-device-batch", type=int, help="micro-batch per GPU (default: the stage's)")
    add_flag(parser, "--model-max-length", "--seq-len", type=int,
             help="tokens per sample (default: the stage's model_max_length)")
    parser.add_argument("--supervised-fraction", type=float, default=0.5,
                        help="share of tokens that are supervised, so get logits (default 0.5)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON instead of a table")


def plan(args: argparse.Namespace) -> dict:
    """Everything `sicog plan` prints, as a dict (what --json prints)."""
    from sicog.model.configuration import SicogConfig
    from sicog.train.config import derive_accumulation, load_profile

    settings = load_profile(args.tier, args.stage)
    if args.model:
        folder = check_input_dir(args.model, "--model", "a saved SICOG model")
        config = SicogConfig.from_pretrained(folder)
    else:
        config = tier_config(args.tier)
    per_device = args.per_device_batch or int(settings.get("per_device_train_batch_size", 1))
    seq = args.model_max_length or int(settings.get("model_max_length", 4096))
    global_batch = int(settings.get("global_batch_size", per_device * args.gpus))
    try:
        accumulation = derive_accumulation(global_batch, per_device, args.gpus)
    except ValueError as e:
        raise InputError(f"--gpus {args.gpus}: {e}") from None
    if not 0 < args.supervised_fraction <= 1:
        raise InputError(f"--supervised-fraction must be in (0, 1], got {args.supervised_fraction}")
    shape = model_shape(config, args.stage)
    run = Launch(gpus=args.gpus, micro_batch=per_device, seq_len=seq, zero=args.zero,
                 supervised_fraction=args.supervised_fraction)
    table = memory.memory_table(shape, run)
    out = {"tier": args.tier, "stage": args.stage, "gpus": args.gpus, "zero": args.zero,
           "gpu_memory_gib": args.gpu_memory, "per_device_batch": per_device, "accumulation": accumulation,
           "global_batch": global_batch, "seq_len": seq, "params": shape.params, "trainable": shape.trainable,
           "memory_gib": {k: v / GIB for k, v in table.items()},
           "full_logits_gib": memory.full_logits(shape, run) / GIB,
           "fits": memory.fits(table["total"], args.gpu_memory)}
    if args.data:
        records = count_records(str(check_input_file(args.data, "--data")))
        out["records"] = records
        out["steps_per_epoch"] = memory.steps_per_epoch(records, per_device, args.gpus, accumulation)
    return out


def render(p: dict) -> str:
    lines = [f"{p['tier']} tier, {p['stage']}: {p['params']:,} parameters, {p['trainable']:,} trainable; "
             f"ZeRO-{p['zero']} over {p['gpus']} GPUs",
             f"batch: {p['per_device_batch']} per device x {p['gpus']} GPUs x {p['accumulation']} accumulation "
             f"= {p['global_batch']} global; {p['seq_len']} tokens per sample (the longest allowed)",
             "", f"{'per GPU':<18}{'GiB':>9}"]
    for name, gib in p["memory_gib"].items():
        if name == "total":
            lines.append("-" * 27)
        lines.append(f"{name:<18}{gib:>9.2f}")
    budget = (1 - memory.HEADROOM) * p["gpu_memory_gib"]
    verdict = "fits" if p["fits"] else "does NOT fit"
    lines += ["", f"{verdict}: {p['memory_gib']['total']:.1f} GiB of {budget:.1f} GiB usable "
                  f"({p['gpu_memory_gib']:g} GiB less {memory.HEADROOM:.0%} headroom)",
              f"(logits: the plain full-vocabulary loss would need {p['full_logits_gib']:.1f} GiB instead of "
              f"{p['memory_gib']['logits']:.1f})"]
    if "records" in p:
        lines.append(f"data: {p['records']:,} records -> {p['steps_per_epoch']:,} optimizer steps per epoch")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    p = plan(args)
    print(json.dumps(p, indent=2) if args.json else render(p))
    return 0 if p["fits"] else 1

