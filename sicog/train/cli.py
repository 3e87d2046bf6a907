"""`sicog train`: every stage through one entry.

    sicog train --stage stage1 --profile tiny --model-name-or-path M --data-path D.jsonl --output_dir OUT
    sicog train --config run.yaml --learning_rate 1e-4          # flags override the YAML

Settings come from configs/stages/<profile>.yaml, then --config, then flags (see
sicog.train.config). The SICOG settings below are spelled with dashes, like every other command's
flags (their LLaVA spellings with underscores, `--model_name_or_path`, `--data_path`, ..., still
work); every HF TrainingArguments field is a flag in HF's own spelling
(--learning_rate, --per_device_train_batch_size, --gradient_accumulation_steps (checked against
the global batch), --num_train_epochs, --output_dir, --deepspeed, --bf16,
--gradient_checkpointing, --save_steps, --logging_steps, --seed, --resume_from_checkpoint PATH|auto,
...). Outputs in output_dir: the model (or, for stage1, mm_projector.safetensors + its config),
train_config.yaml, train_log.jsonl, rejects.jsonl, train_summary.json, checkpoint-N folders
(each complete, see sicog.train.checkpoints). One run writes an output_dir at a time (a lock).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import logging
from pathlib import Path
from typing import get_type_hints

import torch

logger = logging.getLogger(__name__)

# Each setting's flag is its name with dashes; the name as it is (LLaVA's spelling) is a hidden alias.
OWN_ARGUMENTS: list[tuple[str, dict]] = [
    ("config", dict(help="YAML with TrainConfig and TrainingArguments settings")),
    ("stage", dict(help="stage0 | stage1 | stage1_5 | stage2 | dpo (see sicog.train.stages)")),
    ("profile", dict(choices=["tiny", "paper"], help="stage hyperparameters: configs/stages/<profile>.yaml")),
    ("model_name_or_path", dict(help="SICOG model folder the stage starts from")),
    ("data_path", dict(help="LLaVA JSON/JSONL file or a mixture YAML")),
    ("image_folder", dict(help="image root (default: the data file's folder)")),
    ("mm_projector_checkpoint", dict(help="stage-1 projector artefact (file or folder) to load")),
    ("llm_ckpt_dir", dict(help="LLM folder whose weights replace the language model's")),
    ("model_max_length", dict(type=int, help="longest sample after image expansion; longer ones are dropped")),
    ("global_batch_size", dict(type=int, help="samples per optimizer step over all ranks")),
    ("group_by_modality_length", dict(type=lambda s: s.lower() in ("1", "true", "yes"),
                                      help="modality-length grouped batches (true/false)")),
    ("mega_batch_mult", dict(type=int, help="mega-batch size in per-step batches for length grouping")),
    ("peak_tflops", dict(type=float, help="peak TFLOP/s per device for MFU (default: measured)")),
    ("mm_vision_tower_lr", dict(type=float, help="learning rate of the vision tower (default: --learning_rate)")),
    ("mm_projector_lr", dict(type=float, help="learning rate of the projector (default: --learning_rate)")),
    ("warmup_ratio", dict(type=float, help="warmup as a fraction of the steps (alias of a fractional --warmup_steps)")),
    ("attn_implementation", dict(help="auto | sdpa | flash_attention_2 | eager")),
    ("precision", dict(choices=["auto", "fp32", "bf16"],
                       help="bf16: autocast over fp32 master weights (the Trainer's --bf16); auto (default, or "
                            "SICOG_PRECISION): bf16 where the CPU/GPU has it natively, else fp32")),
    ("dpo_beta", dict(type=float, help="dpo stage: beta of the sigmoid DPO loss (default 0.1)")),
    ("dpo_sft_weight", dict(type=float, help="dpo stage: weight of the SFT term on the chosen answer (default 1.0)")),
    ("dry_run", dict(action="store_true",
                     help="print the resolved config, batch arithmetic, DeepSpeed config and output/resume "
                          "paths for WORLD_SIZE ranks, then exit without loading anything")),
    ("dpo_precompute_ref", dict(type=lambda s: s.lower() in ("1", "true", "yes"),
                                help="dpo stage: compute the reference log-probs once before training (true/false)")),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from transformers import HfArgumentParser, TrainingArguments

    from sicog.data.checks import add_flag

    for name, kw in OWN_ARGUMENTS:
        flag = "--" + name.replace("_", "-")
        aliases = () if flag == f"--{name}" else (f"--{name}",)
        add_flag(parser, flag, *aliases, default=argparse.SUPPRESS, **kw)
    group = parser.add_argument_group("HF TrainingArguments (any field)")
    own = {name for name, _ in OWN_ARGUMENTS}
    hints = get_type_hints(TrainingArguments)
    for field in dataclasses.fields(TrainingArguments):
        if not field.init or field.name in own:
            continue
        field = copy.copy(field)
        field.type = hints[field.name]
        HfArgumentParser._parse_dataclass_field(group, field)
    for action in parser._actions:
        if action.dest != "help":
            action.default = argparse.SUPPRESS


def _default_training_settings(training: dict, stage, world_size: int, on_this_machine: bool = True) -> None:
    training.setdefault("report_to", "none")
    if on_this_machine and world_size > 1 and not torch.cuda.is_available():
        # accelerate runs multi-process CPU (gloo) only when told; without it, under DeepSpeed it
        # sees one process and DeepSpeed's batch check fails (train_batch_size 1 != 1 * 1 * 2)
        training.setdefault("use_cpu", True)
    if on_this_machine and torch.cuda.is_available():
        training.setdefault("tf32", True)  # TF32 matmuls on Ampere and later, as the authors set it
    training.setdefault("remove_unused_columns", False)
    training.setdefault("include_num_input_tokens_seen", "non_padding")
    if training.get("activation_checkpointing"):
        training.setdefault("activation_checkpointing_kwargs", {"use_reentrant": False})
    # Every trainable parameter gets a gradient at every step (a text-only batch runs the vision
    # path with zero weight; the tower layers above the feature layer are frozen), so DDP need not
    # search for unused ones.
    training.setdefault("ddp_find_unused_parameters", False)


def _apply_precision(cfg, on_this_machine: bool = True) -> None:
    """Turn `cfg.precision` into the Trainer's `bf16` (and `use_cpu` on a CPU-only machine); log the choice.

    An explicit fp32/bf16 sets `bf16`; under auto a `bf16` given in any layer (the paper profile's
    `bf16: true`, the familiar `--bf16` flag) decides, else the hardware does. With bf16 and no GPU,
    `use_cpu` makes the Trainer (through accelerate) wrap the forward in CPU bf16 autocast; the
    weights stay fp32 and no loss scaling is needed. DeepSpeed on CPU stays fp32 under auto: its
    bf16 casts the weights instead of autocasting. A dry run elsewhere leaves auto unresolved.
    """
    from sicog.model.precision import resolve_precision

    t = cfg.training
    on_gpu = torch.cuda.is_available() and not t.get("use_cpu")
    device = "cuda" if on_gpu else "cpu"
    if cfg.precision != "auto":
        t["bf16"] = cfg.precision == "bf16"
    elif "bf16" in t:
        cfg.precision = "bf16" if t["bf16"] else "fp32"
    elif not on_this_machine:
        return
    elif t.get("deepspeed") and not on_gpu:
        cfg.precision, t["bf16"] = "fp32", False
        logger.info("precision auto -> fp32: DeepSpeed on CPU (its bf16 casts the weights; not autocast)")
    else:
        cfg.precision = resolve_precision("auto", device)
        t["bf16"] = cfg.precision == "bf16"
    if not on_this_machine:
        return
    resolve_precision(cfg.precision, device)  # logs the machine and the choice once
    if t["bf16"] and not torch.cuda.is_available():
        t.setdefault("use_cpu", True)  # TrainingArguments refuses bf16 without a GPU unless told it is CPU


def print_dry_run(cfg) -> int:
    """What a launch would do, for the world size it would have: config, batches, DeepSpeed, paths."""
    import yaml

    from sicog.train.checkpoints import resolve_resume
    from sicog.train.config import CONFIG_NAME

    t = cfg.training
    # main=False: only look (a real run's main process moves incomplete checkpoints aside). A resume
    # path that is missing or incomplete is an InputError (exit 2) before anything is printed, as
    # the launch itself would stop on it
    resumed = resolve_resume(t.get("resume_from_checkpoint"), cfg.output_dir, main=False)
    print(f"--- resolved config ({CONFIG_NAME}) ---")
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    print("--- batch ---")
    print(f"per-device batch {t['per_device_train_batch_size']} x world size {cfg.world_size} x accumulation "
          f"{t['gradient_accumulation_steps']} = global batch {cfg.global_batch_size}")
    ds = t.get("deepspeed")
    print("--- deepspeed ---")
    if ds:
        print(f"{ds}:")
        print(ds if isinstance(ds, dict) else Path(ds).read_text(), end="" if not isinstance(ds, dict) else "\n")
    else:
        print("none (plain DDP)" if cfg.world_size > 1 else "none (one process)")
    print("--- paths ---")
    print(f"output: {cfg.output_dir}")
    print(f"resume: {t.get('resume_from_checkpoint') or 'none'} -> {resumed or 'a fresh start'}")
    return 0


def _share_process_group_with_deepspeed(targs) -> None:
    """Hand the process group accelerate made to DeepSpeed before the model is built.

    On CUDA accelerate initialises DeepSpeed's communication itself; with `use_cpu` (gloo) it does
    not, and ZeRO-3's `zero.Init` inside `from_pretrained` then sees one process and fails its batch
    check. `init_distributed` reuses an existing group, so this is a no-op where it was done.
    """
    import torch.distributed as dist

    if targs.deepspeed and dist.is_available() and dist.is_initialized():
        import deepspeed

        deepspeed.init_distributed(dist_backend=dist.get_backend())


def _skip_unused_shm_kernel_build() -> None:
    """On CPU, DeepSpeed's communication backend compiles a shared-memory all-reduce kernel when it
    starts (about a minute on 2 cores, once per machine); only its inference all-reduce uses it,
    never ZeRO training, whose collectives go through torch.distributed (gloo). The build is skipped."""
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":
        return
    import importlib

    # by module path: `import deepspeed.comm.torch as x` binds deepspeed.comm's attribute `torch`,
    # which is PyTorch itself, not the submodule
    backend = importlib.import_module("deepspeed.comm.torch")
    if hasattr(backend, "build_shm_op"):
        backend.build_shm_op = lambda: None
        logger.info("DeepSpeed on CPU: its shared-memory inference all-reduce kernel is not built "
                    "(ZeRO training does not use it)")


def _reset_rejects(path: Path) -> None:
    """Keep earlier load-time rejects (a resumed run will not revisit them); prepare rewrites its own."""
    from sicog.data.records import read_appended, write_jsonl

    kept, seen = [], set()
    for rec in read_appended(path):
        key = (rec.get("id"), rec.get("source"), rec.get("reason"))
        if rec.get("phase") == "load" and key not in seen:
            seen.add(key)
            kept.append(rec)
    write_jsonl(path, kept)


def _record_cache_dir():
    """Where the record checks are cached (sicog.data.record_cache); None when SICOG_RECORD_CACHE=0."""
    import os

    from sicog.data.record_cache import default_cache_dir

    return None if os.environ.get("SICOG_RECORD_CACHE", "1") == "0" else default_cache_dir()


def run(args: argparse.Namespace) -> int:
    """Train; under torchrun, ranks that finished leave the process group together before exiting.

    (A rank that raised exits at once, so that torchrun stops the others instead of a barrier
    waiting on them.)
    """
    import torch.distributed as dist

    rc = _train(args)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return rc


def _check_projector(path: str | None) -> None:
    """A given --mm-projector-checkpoint holds a projector artefact; InputError naming it otherwise."""
    if not path:
        return
    from sicog.data.checks import InputError
    from sicog.train.artefacts import projector_paths

    try:
        projector_paths(path)
    except FileNotFoundError as e:
        raise InputError(f"--mm-projector-checkpoint: {e}") from None


def _train(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as held:
        return _train_locked(args, held)


def _train_locked(args: argparse.Namespace, held: contextlib.ExitStack) -> int:
    from transformers import TrainingArguments, set_seed

    from sicog.data.dataset import REJECTS_NAME
    from sicog.data.output_lock import OutputLock
    from sicog.train.checkpoints import resolve_resume
    from sicog.train.loading import load_for_stage
    from sicog.train.stages import freeze, get_stage

    cfg, dry_run = _checked_config(args)
    stage = get_stage(cfg.stage)
    _default_training_settings(cfg.training, stage, cfg.world_size, on_this_machine=not dry_run)
    _apply_precision(cfg, on_this_machine=not dry_run)
    if dry_run:
        return print_dry_run(cfg)
    training = dict(cfg.training)
    resume_arg = training.pop("resume_from_checkpoint", None)
    if training.get("deepspeed"):
        _skip_unused_shm_kernel_build()  # before TrainingArguments, whose device setup starts DeepSpeed's backend
    targs = TrainingArguments(**training)
    out = Path(targs.output_dir)
    main = targs.process_index == 0
    if main:  # one run per output_dir: a second one stops here, naming the first
        held.enter_context(OutputLock(out, "--output_dir"))
    with targs.main_process_first(desc="choosing the checkpoint to resume from"):
        resume = resolve_resume(resume_arg, str(out), main=main)
    _share_process_group_with_deepspeed(targs)
    set_seed(targs.seed)
    logger.info("stage %s (%s), profile %s: global batch %d = %d per device x %d ranks x %d accumulation",
                stage.name, stage.description, cfg.profile, cfg.global_batch_size,
                targs.per_device_train_batch_size, cfg.world_size, targs.gradient_accumulation_steps)

    # read before the model is built: a bad or empty file stops at once
    entries = _load_entries(cfg, targs) if stage.name != "dpo" else None
    model, processor = load_for_stage(cfg, stage)
    freeze(model, stage)

    rejects_path = out / REJECTS_NAME
    if main:
        out.mkdir(parents=True, exist_ok=True)
        _reset_rejects(rejects_path)
        cfg.save(out)
    if stage.name == "dpo":  # preference pairs and a frozen reference: sicog.train.dpo
        from sicog.train.dpo import run_dpo

        return run_dpo(cfg, targs, stage, model, processor, rejects_path, resume, main)
    return _train_supervised(cfg, targs, stage, model, processor, entries, rejects_path, resume, main)


def _checked_config(args: argparse.Namespace):
    """The run's TrainConfig from the flags (and --config), and whether this is a dry run; bad
    settings and bad paths stop here, in one line, before anything is built."""
    from sicog.data.checks import InputError, check_input_dir, check_input_file, check_output_dir
    from sicog.model.folder import check_model_folder
    from sicog.train.artefacts import read_projector_meta
    from sicog.train.config import resolve_config

    overrides = dict(vars(args))
    dry_run = overrides.pop("dry_run", False)
    _check_projector(overrides.get("mm_projector_checkpoint"))
    if "model_name_or_path" not in overrides and overrides.get("mm_projector_checkpoint"):
        base = read_projector_meta(overrides["mm_projector_checkpoint"]).get("base_model")
        if base:
            overrides["model_name_or_path"] = base
            logger.info("model_name_or_path from the projector artefact: %s", base)
    try:
        cfg = resolve_config(overrides)
    except ValueError as e:  # a bad setting (flag or --config YAML): one line, exit 2
        raise InputError(str(e)) from None
    check_output_dir(cfg.output_dir, "--output_dir", create=False)
    check_model_folder(cfg.model_name_or_path, "--model-name-or-path")
    check_input_file(cfg.data_path, "--data-path")
    _check_projector(cfg.mm_projector_checkpoint)  # also when it came from --config
    if cfg.image_folder:
        check_input_dir(cfg.image_folder, "--image-folder", "the folder the records' image paths are relative to")
    return cfg, dry_run


def _load_entries(cfg, targs) -> list:
    """The training records of --data-path (a file or a mixture); InputError when bad or empty."""
    from sicog.data.checks import InputError
    from sicog.data.mixture import load_data

    try:
        entries = load_data(cfg.data_path, cfg.image_folder, seed=targs.data_seed or targs.seed)
    except (ValueError, FileNotFoundError) as e:
        raise InputError(f"--data-path: {e}") from None
    if not entries:
        raise InputError(f"--data-path {cfg.data_path} holds no records (an empty file)")
    return entries


def _train_supervised(cfg, targs, stage, model, processor, entries: list, rejects_path: Path, resume,
                      main: bool) -> int:
    """The supervised stages: records checked and tokenised, trained, saved, summarised."""
    from sicog.data.collator import TrainCollator
    from sicog.data.dataset import RejectLog, SupervisedDataset, prepare_samples
    from sicog.train.flops import run_flops
    from sicog.train.trainer import SicogTrainer

    samples = prepare_samples(entries, processor, cfg.model_max_length,
                              RejectLog(rejects_path if main else None), progress=main,
                              require_image=stage.projector_only, regrid_prob=cfg.regrid_prob,
                              seed=targs.data_seed or targs.seed, cache_dir=_record_cache_dir())
    if not samples:
        logger.error("no usable training records in %s (reasons in %s)", cfg.data_path, rejects_path)
        return 1
    dataset = SupervisedDataset(samples, processor, RejectLog(rejects_path))

    flops_per_token, peak = run_flops(model, dataset.lengths, cfg.peak_tflops, targs.device, targs.bf16)
    trainer = SicogTrainer(
        model=model, args=targs, train_dataset=dataset, data_collator=TrainCollator(processor),
        processing_class=processor, run_config=cfg, stage=stage, flops_per_token=flops_per_token,
        peak_flops=peak * cfg.world_size,
    )
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    if main:
        out = Path(targs.output_dir)
        summary = {"stage": stage.name, "samples": len(samples), "records": len(entries),
                   "metrics": result.metrics, "global_step": trainer.state.global_step}
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        logger.info("done: %s", json.dumps(summary))
    return 0
