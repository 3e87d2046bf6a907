"""`SicogTrainer`: HF Trainer with the grouped sampler, throughput/MFU logging and stage-aware saving.

The Trainer itself restores weights, optimizer, scheduler, step, data position and RNG on resume;
this subclass only adds what SICOG needs:
- the modality-length grouped batch sampler (`sicog.data.sampler`);
- tokens/s (non-pad tokens, all ranks) and MFU in every log line, and a JSONL training log;
- a zero loss (through a one-token forward) for a batch whose samples all failed to load, so
  every rank keeps stepping;
- projector-only stages save (and resume from) the `mm_projector.safetensors` artefact rather
  than a full model, and under DeepSpeed their checkpoints leave the frozen weights out;
  every saved folder gets the resolved run config beside it;
- checkpoints are staged and renamed when complete, with a completion marker
  (`sicog.train.checkpoints`), so that a kill during a save never leaves a half checkpoint;
- a resumed run rewrites the training log up to its checkpoint's step, so every step is logged once.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints, seed_worker
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

from sicog.data.records import atomic_write_text, dumps, read_appended
from sicog.data.sampler import ModalityLengthGroupedSampler
from sicog.train.artefacts import (PROJECTOR_WEIGHTS, load_model_weights, load_projector_artefact,
                                   save_projector_artefact)
from sicog.train.checkpoints import STAGING, publish, write_marker
from sicog.train.config import PART_LR_FIELDS, TrainConfig
from sicog.train.flops import mfu
from sicog.train.stages import Stage, numel, part_params

logger = logging.getLogger(__name__)

TRAIN_LOG_NAME = "train_log.jsonl"


class JsonlLogCallback(TrainerCallback):
    """Appends every log line (with its step) to `<output_dir>/train_log.jsonl` on the main process.

    At the start of training the log is cut back to the lines of the steps before the starting
    step: a run resumed from checkpoint N drops the lines a killed run wrote after N (those steps
    are trained and logged again), and a fresh start begins an empty log.
    """

    def on_train_begin(self, args, state, control, **kwargs):
        path = Path(args.output_dir) / TRAIN_LOG_NAME
        if not state.is_world_process_zero or not path.exists():
            return
        written = sum(1 for line in path.read_bytes().split(b"\n") if line.strip())
        kept = [rec for rec in read_appended(path)  # a line cut by a kill is dropped
                if isinstance(rec.get("step"), int) and rec["step"] <= state.global_step]
        dropped = written - len(kept)
        if dropped:
            atomic_write_text(path, "".join(dumps(rec) + "\n" for rec in kept))
            logger.info("%s: kept the %d lines up to step %d, dropped %d written after it by an earlier run",
                        path.name, len(kept), state.global_step, dropped)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        path = Path(args.output_dir) / TRAIN_LOG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"step": state.global_step, **logs}) + "\n")


class ThroughputClockCallback(TrainerCallback):
    """Starts the tokens/s clock when training starts (not when the trainer is built)."""

    def __init__(self, trainer: "SicogTrainer"):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._last_log = (time.perf_counter(), state.num_input_tokens_seen)


class ShortRunWarningCallback(TrainerCallback):
    """Warns when every optimizer step falls inside the warm-up.

    The warm-up starts at learning rate 0, so a run that is all warm-up barely moves the weights;
    a one-step run (a stage-1.5 mixture of a few curated samples) leaves them unchanged.
    """

    def on_train_begin(self, args, state, control, **kwargs):
        warmup = args.get_warmup_steps(state.max_steps)
        if state.max_steps and state.max_steps <= warmup:
            logger.warning(
                "all %d optimizer step(s) fall inside the %d-step warm-up, which starts at learning rate 0: "
                "the model %s. Give the stage more data or epochs, or set --warmup_ratio 0.",
                state.max_steps, warmup,
                "is left unchanged" if state.max_steps == 1 else "never trains at its full learning rate")


class SamplerEpochCallback(TrainerCallback):
    """Sets the sampler's epoch at each epoch start, including a resumed epoch whose loader skips batches."""

    def __init__(self, sampler: ModalityLengthGroupedSampler):
        self.sampler = sampler

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.sampler.set_epoch(int(state.epoch or 0))


def _zero_through_trainable(model) -> torch.Tensor:
    """A zero loss for a batch whose samples all failed to load, from a one-token forward.

    Going through the (wrapped) model's training forward, with labels (all ignored), keeps the step
    identical on every rank: DDP and DeepSpeed see the same modules called in the same order as on
    a rank with a real batch (the vision path included, with zero weight; ZeRO-3 traces that order
    to prefetch weights), and a backward with zero gradients.
    """
    device = next(model.parameters()).device
    ids = torch.zeros((1, 2), dtype=torch.long, device=device)
    return model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.full_like(ids, -100)).loss * 0.0


def _load_non_strict(load, *args, **kwargs):
    """DeepSpeedEngine.load_checkpoint with the module's frozen weights allowed to be absent."""
    kwargs["load_module_strict"] = False
    return load(*args, **kwargs)


class SicogTrainer(Trainer):
    def __init__(self, *args, run_config: TrainConfig, stage: Stage, flops_per_token: float,
                 peak_flops: float | None, **kwargs):
        super().__init__(*args, **kwargs)
        self.run_config = run_config
        self.stage = stage
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops  # all devices together
        self._last_log = (time.perf_counter(), 0)
        self.add_callback(JsonlLogCallback())
        self.add_callback(ThroughputClockCallback(self))
        self.add_callback(ShortRunWarningCallback())
        self.grouped_sampler = None
        if run_config.group_by_modality_length:
            ds = self.train_dataset
            self.grouped_sampler = ModalityLengthGroupedSampler(
                ds.lengths, ds.has_image, self.args.per_device_train_batch_size,
                world_size=self.args.world_size, seed=self.args.data_seed or self.args.seed,
                mega_batch_mult=run_config.mega_batch_mult)
            self.add_callback(SamplerEpochCallback(self.grouped_sampler))

    # --- data -------------------------------------------------------------------------------
    def get_train_dataloader(self) -> DataLoader:
        if self.grouped_sampler is None:
            return super().get_train_dataloader()
        args = self.args
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=self.grouped_sampler,
            collate_fn=self.data_collator,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory and torch.cuda.is_available(),
            persistent_workers=args.dataloader_persistent_workers and args.dataloader_num_workers > 0,
            prefetch_factor=args.dataloader_prefetch_factor if args.dataloader_num_workers > 0 else None,
            worker_init_fn=partial(seed_worker, num_workers=args.dataloader_num_workers, rank=args.process_index),
        )
        return self.accelerator.prepare(loader)

    # --- loss and logging -------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if inputs["input_ids"].numel() == 0:
            zero = _zero_through_trainable(model)
            return (zero, None) if return_outputs else zero
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            now, tokens = time.perf_counter(), self.state.num_input_tokens_seen
            last_time, last_tokens = self._last_log
            elapsed = max(now - last_time, 1e-9)
            tps = (tokens - last_tokens) / elapsed
            logs["tokens_per_s"] = round(tps, 2)
            if self.peak_flops:
                logs["mfu"] = round(mfu(tps, self.flops_per_token, self.peak_flops), 6)
            self._last_log = (now, tokens)
        super().log(logs, start_time)

    # --- optimizer ----------------------------------------------------------------------------
    def create_optimizer(self, model=None):
        """The Trainer's optimizer, with the vision tower and projector at their own learning rates when set.

        Groups are keyed by (part learning rate, weight decay); the scheduler scales every group's
        learning rate alike, so the ratios hold over the whole schedule.
        """
        part_lrs = {part: getattr(self.run_config, key) for part, key in PART_LR_FIELDS.items()
                    if getattr(self.run_config, key) is not None}
        if not part_lrs or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        owner = {id(p): part for part, params in part_params(self.accelerator.unwrap_model(opt_model)).items()
                 for p in params}
        decay = set(self.get_decay_parameter_names(opt_model))
        groups: dict[tuple[float, float], list] = {}
        for name, p in opt_model.named_parameters():
            if not p.requires_grad:
                continue
            lr = part_lrs.get(owner.get(id(p)), self.args.learning_rate)
            wd = self.args.weight_decay if name in decay else 0.0
            groups.setdefault((lr, wd), []).append(p)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(
            [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()], **optimizer_kwargs)
        for (lr, wd), ps in groups.items():
            logger.info("optimizer group: lr %g, weight decay %g, %s parameters", lr, wd, f"{sum(numel(p) for p in ps):,}")
        return self.optimizer

    # --- saving and loading -----------------------------------------------------------------
    _staging_dir: str | None = None

    def _get_output_dir(self, trial) -> str:
        return self._staging_dir or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's checkpoint, written into the staging folder, marked complete, then renamed.

        Every rank writes its part (DeepSpeed shards) into `.checkpoint-staging/checkpoint-N`; after a
        barrier the saving process writes the completion marker and renames the folder into place,
        then applies `save_total_limit` to the complete checkpoints.
        """
        run_dir = Path(super()._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self._staging_dir = str(run_dir / STAGING)
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_dir = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            write_marker(run_dir / STAGING / name, self.state.global_step)
            publish(run_dir / STAGING / name, run_dir / name)
            with contextlib.suppress(OSError):  # left only when not empty: another rank's leftover
                (run_dir / STAGING).rmdir()
            rotate_checkpoints(str(run_dir), self.args.save_total_limit, self.state.best_model_checkpoint)
        self.accelerator.wait_for_everyone()

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        if self.stage.projector_only:
            if state_dict is None:  # no DeepSpeed: the projector's own weights
                proj = self.accelerator.unwrap_model(self.model).projector.state_dict()
            else:  # DeepSpeed hands over the gathered full state dict (ZeRO-3-safe)
                prefix = "model.projector."
                proj = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
            if self.args.should_save:
                meta = {"stage": self.stage.name, "base_model": self.run_config.model_name_or_path,
                        "model_config": self.accelerator.unwrap_model(self.model).config.to_dict()}
                save_projector_artefact(proj, output_dir, meta)
        else:
            super()._save(output_dir, state_dict=state_dict)
        if self.args.should_save:
            self.run_config.save(output_dir)

    # --- projector-only stages under DeepSpeed ------------------------------------------------
    # DeepSpeed's checkpoint (global_stepN/) holds the module's weights beside the optimizer shards:
    # for stage 1 that is the whole frozen tower and LLM (~16 GB at paper scale) in every checkpoint,
    # for a projector of 68M parameters. So a projector-only stage saves the trainable weights only
    # (DeepSpeed's `exclude_frozen_parameters`), and loads such a checkpoint non-strictly (the
    # frozen weights come from the model folder, unchanged). The Trainer loads a DeepSpeed
    # checkpoint strictly and offers no hook between building the engine and loading, except
    # `create_scheduler`, called in between: there the engine's `load_checkpoint` is given
    # `load_module_strict=False`, for this run only.
    def _projector_only_deepspeed(self) -> bool:
        return self.is_deepspeed_enabled and self.stage.projector_only

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if not self._projector_only_deepspeed():
            return super()._save_optimizer_and_scheduler(output_dir)
        from accelerate.utils import DeepSpeedSchedulerWrapper

        self.model_wrapped.save_checkpoint(output_dir, exclude_frozen_parameters=True)
        if self.args.should_save and not isinstance(self.lr_scheduler, DeepSpeedSchedulerWrapper):
            torch.save(self.lr_scheduler.state_dict(), str(Path(output_dir) / "scheduler.pt"))

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        wrapped = getattr(self.accelerator, "deepspeed_engine_wrapped", None)
        if self._projector_only_deepspeed() and wrapped is not None:
            engine = wrapped.engine
            load = type(engine).load_checkpoint.__get__(engine)
            engine.load_checkpoint = partial(_load_non_strict, load)
        return scheduler

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """A projector artefact, or a full model saved under the checkpoint names (`sicog.model.modeling`)."""
        ckpt = Path(resume_from_checkpoint)
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        full = (ckpt / SAFE_WEIGHTS_NAME).is_file() or (ckpt / SAFE_WEIGHTS_INDEX_NAME).is_file()
        if self.stage.projector_only and not full and (ckpt / PROJECTOR_WEIGHTS).is_file():
            load_projector_artefact(target, ckpt)
        elif full and not self.is_fsdp_enabled:
            load_model_weights(target, ckpt)
        else:
            super()._load_from_checkpoint(resume_from_checkpoint, model)
