"""Per-GPU training memory of a SICOG launch, by formula (used by `sicog plan`).

Every figure is in bytes for one GPU, for bf16 mixed-precision AdamW under DeepSpeed ZeRO-2 or
ZeRO-3 with data parallelism over `d` GPUs. Symbols:

    N   all parameters (vision tower + projector + LLM)     T   trainable parameters (the stage's parts,
    d   GPUs (data-parallel ranks)                              less the frozen tower layers above the
    b   per-device micro-batch (samples)                        feature layer)
    s   tokens per sample (model_max_length: the peak is set by the longest batch)
    h, L, kv, i   LLM hidden size, layers, key/value width (kv heads x head dim), MLP width
    V   vocabulary size
    w, Lv, iv, u, P   vision width, vision layers run, vision MLP width, units per image
                      (max slices + overview), tokens per unit (patches + CLS)
    f   share of the tokens that are supervised (their logits are computed)

Weights (bf16, 2 bytes):
    ZeRO-2: 2N (every GPU holds all weights)
    ZeRO-3: 2N/d + 2 * working set, working set = min(stage3_max_live_parameters,
            largest module (the LM head or the embedding, V*h) + prefetch bucket (0.9 h^2));
            the gathered weights of the modules being run
Gradients (bf16, 2 bytes, of trainable parameters only): 2T/d under both ZeRO-2 and ZeRO-3
    (partitioned), plus the reduce buckets: 2 buckets (overlap_comm) x reduce_bucket_size (h^2) x 2 bytes
Optimizer states (fp32 master weights, Adam m and v: 12 bytes per trainable parameter): 12T/d
Activations, with gradient checkpointing on every decoder and vision layer:
    LLM checkpoints: L * b*s * h * 2                   (each layer's input, kept for the backward)
    LLM layer being recomputed: 2 * b*s * (6h + 2kv + 4i) * 2
        the tensors one Qwen2 block saves for its backward (the two norm inputs and outputs, q,
        attention output, k and v, the MLP's gate, up, activation and product; flash/SDPA
        attention keeps no s x s scores), times 2 for their gradients during that layer's backward
    vision checkpoints: Lv * b*u*P * w * 2
    vision layer being recomputed: 2 * b*u*P * (6w + 2iv) * 2
    (u = max_slices + 1: every sample's image at the most slices, the worst case)
Logits of the supervised-only loss (sicog.model.loss): r = f * b*s rows get logits:
    2 * r*V * 2        bf16 logits and their gradient
    + 3 * c*V * 4      one chunk of c = 1024 rows in fp32: logits, log-softmax, gradient
    (the plain loss would keep b*s*V * (2 + 4 + 4): bf16 logits, fp32 copy, fp32 log-softmax)
Fits when the total is at most (1 - headroom) of the GPU's memory; the headroom (10%) is for the
CUDA context, the allocator's fragmentation and NCCL's buffers, none of which is modelled here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

BF16 = 2
ADAM_STATE_BYTES = 12          # fp32 master weights + exp_avg + exp_avg_sq
CHUNK_ROWS = 1024              # sicog.model.loss.CHUNK_ROWS
HEADROOM = 0.10
GIB = 1024**3


@dataclass(frozen=True)
class ModelShape:
    """Sizes the formulas need; parameter counts are exact (counted on the built model)."""

    params: int                 # N
    trainable: int              # T
    hidden: int                 # h
    layers: int                 # L
    kv_dim: int                 # kv
    intermediate: int           # i
    vocab: int                  # V
    vision_width: int           # w
    vision_layers: int          # Lv (layers run up to the feature layer)
    vision_intermediate: int    # iv
    units_per_image: int        # u
    tokens_per_unit: int        # P


@dataclass(frozen=True)
class Launch:
    gpus: int                   # d
    micro_batch: int            # b
    seq_len: int                # s
    zero: int                   # 2 or 3
    supervised_fraction: float = 0.5   # f
    max_live_parameters: float = 1e9   # configs/deepspeed/zero3.json


def weights(m: ModelShape, run: Launch) -> float:
    if run.zero == 2:
        return BF16 * m.params
    working = min(run.max_live_parameters, m.vocab * m.hidden + 0.9 * m.hidden**2)
    return BF16 * m.params / run.gpus + BF16 * working


def gradients(m: ModelShape, run: Launch) -> float:
    return BF16 * m.trainable / run.gpus + 2 * m.hidden**2 * BF16


def optimizer_states(m: ModelShape, run: Launch) -> float:
    return ADAM_STATE_BYTES * m.trainable / run.gpus


def activations(m: ModelShape, run: Launch) -> float:
    tokens = run.micro_batch * run.seq_len
    llm = m.layers * tokens * m.hidden * BF16
    llm += 2 * tokens * (6 * m.hidden + 2 * m.kv_dim + 4 * m.intermediate) * BF16
    vtokens = run.micro_batch * m.units_per_image * m.tokens_per_unit
    vision = m.vision_layers * vtokens * m.vision_width * BF16
    vision += 2 * vtokens * (6 * m.vision_width + 2 * m.vision_intermediate) * BF16
    return llm + vision


def logits(m: ModelShape, run: Launch) -> float:
    rows = math.ceil(run.supervised_fraction * run.micro_batch * run.seq_len)
    return 2 * rows * m.vocab * BF16 + 3 * min(rows, CHUNK_ROWS) * m.vocab * 4


def full_logits(m: ModelShape, run: Launch) -> float:
    """What the plain full-vocabulary loss would keep (for comparison only)."""
    return run.micro_batch * run.seq_len * m.vocab * (BF16 + 4 + 4)


def memory_table(m: ModelShape, run: Launch) -> dict[str, float]:
    """{row: bytes} for one GPU, with the total."""
    if run.zero not in (2, 3):
        raise ValueError(f"ZeRO stage must be 2 or 3, got {run.zero}")
    rows = {
        "weights": weights(m, run),
        "gradients": gradients(m, run),
        "optimizer states": optimizer_states(m, run),
        "activations": activations(m, run),
        "logits": logits(m, run),
    }
    rows["total"] = sum(rows.values())
    return rows


def fits(total_bytes: float, gpu_memory_gib: float, headroom: float = HEADROOM) -> bool:
    return total_bytes <= (1 - headroom) * gpu_memory_gib * GIB


def steps_per_epoch(records: int, micro_batch: int, gpus: int, accumulation: int) -> int:
    """Optimizer steps in one epoch: ceil(ceil(records / (b*d)) / accumulation).

    Each rank runs ceil(records / (b*d)) micro-batches (the last one short), and an optimizer
    step takes `accumulation` of them (the last step of an epoch may take fewer).
    """
    micro_steps = math.ceil(records / (micro_batch * gpus))
    return math.ceil(micro_steps / accumulation)
