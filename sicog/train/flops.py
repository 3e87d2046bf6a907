"""Model FLOPs per token and this machine's matmul peak, for MFU.

MFU = achieved model FLOP/s / peak FLOP/s. Model FLOPs follow the usual dense-transformer count
for training: 6 * N per token for the weights (forward 2N, backward 4N) plus 12 * L * d * s per
token for attention scores and values at context length s. N is the language model's
non-embedding parameter count; the vision tower and projector are left out, so the figure is a
slight under-estimate of the work done.
"""
from __future__ import annotations

import time

import torch


def measure_matmul_peak(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                        size: int | None = None, iters: int | None = None, warmup: int = 2) -> float:
    """Measured dense matmul throughput in FLOP/s (the best of `iters` timed square matmuls)."""
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    size = size or (8192 if on_cuda else 1024)
    iters = iters or (20 if on_cuda else 5)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if on_cuda else (lambda: None)
    for _ in range(warmup):
        torch.mm(a, b)
    sync()
    best = float("inf")
    for _ in range(iters):
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / best


def llm_shape(language_model: torch.nn.Module) -> tuple[int, int, int]:
    """(non-embedding parameters, layers, hidden size) of a HF language model (with or without its LM head)."""
    def numel(p):  # ZeRO-3 partitioned parameters keep their full size in ds_numel
        return int(getattr(p, "ds_numel", p.numel()))

    cfg = language_model.config
    n_embed = sum(numel(p) for p in language_model.get_input_embeddings().parameters())
    out = language_model.get_output_embeddings() if hasattr(language_model, "get_output_embeddings") else None
    if out is not None and out.weight is not language_model.get_input_embeddings().weight:
        n_embed += numel(out.weight)
    n_params = sum(numel(p) for p in language_model.parameters()) - n_embed
    return n_params, cfg.num_hidden_layers, cfg.hidden_size


def training_flops_per_token(n_params: int, n_layers: int, hidden: int, seq_len: float) -> float:
    """Training FLOPs per token: 6N for the weights plus 12*L*d*s for attention."""
    return 6.0 * n_params + 12.0 * n_layers * hidden * seq_len


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops: float) -> float:
    if peak_flops <= 0:
        raise ValueError("peak FLOP/s must be positive")
    return tokens_per_second * flops_per_token / peak_flops


def run_flops(model: torch.nn.Module, lengths: list[int], peak_tflops: float | None, device: torch.device,
              bf16: bool) -> tuple[float, float]:
    """(training FLOPs per token of the language model at the data's mean sequence length, per-device peak FLOP/s).

    The peak is `peak_tflops` when given, else measured on `device` in the training dtype (bf16 under
    bf16 autocast, on CPU too).
    """
    import logging

    n_params, n_layers, hidden = llm_shape(model.language_model)
    flops_per_token = training_flops_per_token(n_params, n_layers, hidden, sum(x * x for x in lengths) / sum(lengths))
    if peak_tflops:
        return flops_per_token, peak_tflops * 1e12
    dtype = torch.bfloat16 if bf16 else torch.float32  # MFU against the peak of the precision used
    peak = measure_matmul_peak(device, dtype)
    logging.getLogger(__name__).info("measured matmul peak: %.2f TFLOP/s per device (%s)", peak / 1e12, dtype)
    return flops_per_token, peak

