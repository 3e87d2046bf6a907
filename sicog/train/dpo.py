"""DPO (`sicog train --stage dpo`): sigmoid DPO plus an SFT term against a frozen reference.

For a batch of B pairs, with summed completion log-probabilities pi (policy) and ref (reference)
of the chosen (c) and rejected (r) answers,

    loss = mean_b -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))) + sft_weight * NLL(chosen)

where NLL(chosen) is the mean negative log-likelihood per chosen-answer token (the paper's DPO
variant: beta 0.1, SFT weight 1.0; settings `dpo_beta`, `dpo_sft_weight`). Rewards are
beta * (pi - ref); every log line of the training log gets rewards/chosen, rewards/rejected,
rewards/margins, rewards/accuracies (fraction of pairs whose chosen reward is higher),
logps/chosen, logps/rejected, dpo_loss and sft_loss, averaged over the pairs since the last line.

The reference is a frozen copy of the starting model (eval mode, no gradients, forward under
no_grad); with `dpo_precompute_ref` its log-probabilities are computed once before training and
the copy is released. Images, slices and the completion mask come from `sicog.train.dpo_data`.

TRL's DPOTrainer is not used: its vision path builds `pixel_values` (and grid tensors) with its
own processor call on text it tokenizes itself, while our model takes per-sample `ImageInput`
objects (overview plus a variable grid of slices) whose image positions only
`SicogProcessor.encode` writes, so the slices would be lost on the way.
"""
from __future__ import annotations

import copy
import gc
import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from sicog.data.template import IGNORE_INDEX
from sicog.train.trainer import SicogTrainer, _zero_through_trainable

logger = logging.getLogger(__name__)

STAT_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
             "logps/chosen", "logps/rejected", "dpo_loss", "sft_loss")


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair sigmoid DPO losses and the (detached) chosen and rejected rewards."""
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


def preference_loss(logps: torch.Tensor, counts: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
                    beta: float, sft_weight: float) -> dict[str, torch.Tensor]:
    """The stage's loss from the batch's summed completion log-probs (chosen half first) and token counts.

    Returns loss, dpo (mean sigmoid DPO loss), sft (mean NLL per chosen-answer token) and the
    per-pair chosen_rewards and rejected_rewards.
    """
    n = logps.shape[0] // 2
    losses, chosen_rewards, rejected_rewards = dpo_loss(logps[:n], logps[n:], ref_chosen, ref_rejected, beta)
    dpo = losses.mean()
    sft = -logps[:n].sum() / counts[:n].sum().clamp(min=1)
    return {"loss": dpo + sft_weight * sft, "dpo": dpo, "sft": sft,
            "chosen_rewards": chosen_rewards, "rejected_rewards": rejected_rewards}


def completion_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence: the summed log-probability of its labelled tokens and their number.

    Position t predicts token t+1. Half-precision logits are upcast to fp32 one row at a time,
    so no more than one sequence's [T, V] is held in fp32 at once.
    """
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    safe = targets.masked_fill(~mask, 0)
    sums = []
    for row in range(logits.shape[0]):
        lg = logits[row, :-1].to(torch.promote_types(logits.dtype, torch.float32))
        token_logps = lg.gather(-1, safe[row].unsqueeze(-1)).squeeze(-1) - lg.logsumexp(-1)
        sums.append((token_logps * mask[row]).sum())
    return torch.stack(sums), mask.sum(-1)


def freeze_reference(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


def _forward_inputs(inputs: dict, device=None) -> dict:
    move = (lambda t: t.to(device)) if device is not None else (lambda t: t)
    return {"input_ids": move(inputs["input_ids"]), "attention_mask": move(inputs["attention_mask"]),
            "images": inputs["images"], "use_cache": False}


@torch.no_grad()
def reference_logps(ref_model: nn.Module, inputs: dict, device=None) -> torch.Tensor:
    """Summed completion log-probabilities of every sequence of a batch under the frozen reference."""
    labels = inputs["labels"].to(device) if device is not None else inputs["labels"]
    return completion_logps(ref_model(**_forward_inputs(inputs, device)).logits, labels)[0]


def precompute_reference_logps(ref_model: nn.Module, dataset, collator, batch_size: int, device,
                               progress: bool = True) -> list[tuple[float, float] | None]:
    """(chosen, rejected) reference log-probabilities per pair; None where the pair fails to load.

    Each rank computes every world_size-th pair and the results are exchanged, so every rank ends
    with the whole list. Load failures are not recorded here (training records them).
    """
    import torch.distributed as dist

    from sicog.data.dataset import RejectLog

    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    quiet = copy.copy(dataset)
    quiet.rejects, quiet.reference_logps, quiet._load_failed = RejectLog(None), None, set()
    mine = list(range(rank, len(dataset), world))
    values: dict[int, tuple[float, float]] = {}
    for start in tqdm(range(0, len(mine), batch_size), desc="reference log-probs", disable=not progress):
        loaded = [(i, quiet[i]) for i in mine[start:start + batch_size]]
        loaded = [(i, x) for i, x in loaded if x is not None]
        if not loaded:
            continue
        logps = reference_logps(ref_model, collator([x for _, x in loaded]), device).tolist()
        n = len(loaded)
        for k, (i, _) in enumerate(loaded):
            values[i] = (logps[k], logps[n + k])
    if world > 1:
        parts: list[dict | None] = [None] * world
        dist.all_gather_object(parts, values)
        values = {i: v for part in parts for i, v in part.items()}
    return [values.get(i) for i in range(len(dataset))]


class DpoTrainer(SicogTrainer):
    """SicogTrainer with the DPO loss; `ref_model` is None when reference log-probs are precomputed."""

    def __init__(self, *args, ref_model: nn.Module | None, beta: float, sft_weight: float, **kwargs):
        super().__init__(*args, **kwargs)
        if beta <= 0:
            raise ValueError(f"dpo_beta must be > 0, got {beta}")
        if sft_weight < 0:
            raise ValueError(f"dpo_sft_weight must be >= 0, got {sft_weight}")
        self.beta = beta
        self.sft_weight = sft_weight
        # The loss is a mean over this micro-batch's pairs; the Trainer divides it by the accumulation.
        self.model_accepts_loss_kwargs = False
        self.ref_model = freeze_reference(ref_model).to(self.args.device) if ref_model is not None else None
        self._pairs = 0
        self._stats = torch.zeros(len(STAT_KEYS), dtype=torch.float64)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if inputs["input_ids"].numel() == 0:
            zero = _zero_through_trainable(model)
            return (zero, None) if return_outputs else zero
        outputs = model(**_forward_inputs(inputs))
        logps, counts = completion_logps(outputs.logits, inputs["labels"])
        n = logps.shape[0] // 2
        if "ref_logps" in inputs:
            ref = inputs["ref_logps"].to(logps)
            ref_chosen, ref_rejected = ref[:, 0], ref[:, 1]
        elif self.ref_model is not None:
            ref = reference_logps(self.ref_model, inputs).to(logps)
            ref_chosen, ref_rejected = ref[:n], ref[n:]
        else:
            raise RuntimeError("no reference: neither a reference model nor precomputed reference log-probs")
        out = preference_loss(logps, counts, ref_chosen, ref_rejected, self.beta, self.sft_weight)
        with torch.no_grad():
            chosen_rewards, rejected_rewards = out["chosen_rewards"], out["rejected_rewards"]
            step = torch.stack([chosen_rewards.sum(), rejected_rewards.sum(), (chosen_rewards - rejected_rewards).sum(),
                                (chosen_rewards > rejected_rewards).sum(), logps[:n].sum(), logps[n:].sum(),
                                out["dpo"] * n, out["sft"] * n])
            self._stats += step.detach().double().cpu()
            self._pairs += n
        loss = out["loss"]
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            stats = torch.cat([torch.tensor([float(self._pairs)], dtype=torch.float64), self._stats])
            if self.accelerator.num_processes > 1:
                stats = self.accelerator.reduce(stats.to(self.args.device), reduction="sum").cpu()
            if stats[0] > 0:
                for key, value in zip(STAT_KEYS, (stats[1:] / stats[0]).tolist()):
                    logs[key] = round(value, 6)
            self._stats.zero_()
            self._pairs = 0
        super().log(logs, start_time)


def run_dpo(cfg, targs, stage, model, processor, rejects_path: Path, resume: str | None, main: bool) -> int:
    """The `dpo` stage of `sicog train`: pairs, reference, trainer, training, summary."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    from sicog.data.dataset import RejectLog
    from sicog.train.dpo_data import PreferenceCollator, PreferenceDataset, prepare_pairs
    from sicog.train.flops import run_flops

    if cfg.dpo_beta <= 0 or cfg.dpo_sft_weight < 0:
        logger.error("dpo_beta must be > 0 and dpo_sft_weight >= 0 (got %s and %s)", cfg.dpo_beta, cfg.dpo_sft_weight)
        return 2
    if is_deepspeed_zero3_enabled():
        logger.error("the dpo stage keeps a whole reference copy per device: use ZeRO-2 (configs/deepspeed) or "
                     "no DeepSpeed, not ZeRO-3")
        return 2
    try:
        pairs, n_records = prepare_pairs(cfg.data_path, cfg.image_folder, processor, cfg.model_max_length,
                                         RejectLog(rejects_path if main else None), progress=main)
    except (OSError, ValueError) as e:
        logger.error("%s", e)
        return 2
    if not pairs:
        logger.error("no usable preference pairs in %s (reasons in %s)", cfg.data_path, rejects_path)
        return 1
    dataset = PreferenceDataset(pairs, processor, RejectLog(rejects_path))
    collator = PreferenceCollator(dataset.processor)

    ref_model = freeze_reference(copy.deepcopy(model))
    if targs.bf16 and targs.device.type == "cuda":
        ref_model.to(torch.bfloat16)
    logger.info("reference: a frozen copy of %s (eval mode, no gradients)", cfg.model_name_or_path)
    if cfg.dpo_precompute_ref:
        ref_model.to(targs.device)
        dataset.set_reference_logps(precompute_reference_logps(
            ref_model, dataset, collator, targs.per_device_train_batch_size, targs.device, progress=main))
        ref_model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        logger.info("reference log-probs precomputed for %d pairs; the reference copy is released", len(pairs))

    flops_per_token, peak = run_flops(model, dataset.lengths, cfg.peak_tflops, targs.device, targs.bf16)
    if ref_model is not None:
        flops_per_token *= 4 / 3  # plus the reference forward (a third of forward + backward)
    logger.info("dpo: beta %s, sft weight %s, %d pairs", cfg.dpo_beta, cfg.dpo_sft_weight, len(pairs))
    trainer = DpoTrainer(
        model=model, args=targs, train_dataset=dataset, data_collator=collator, processing_class=processor,
        run_config=cfg, stage=stage, flops_per_token=flops_per_token, peak_flops=peak * cfg.world_size,
        ref_model=ref_model, beta=cfg.dpo_beta, sft_weight=cfg.dpo_sft_weight,
    )
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    if main:
        summary = {"stage": stage.name, "pairs": len(pairs), "records": n_records, "metrics": result.metrics,
                   "global_step": trainer.state.global_step}
        (Path(targs.output_dir) / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        logger.info("done: %s", json.dumps(summary))
    return 0
