"""Compute precision: fp32, or bf16 autocast over fp32 weights where the hardware has bf16.

One setting for `sicog train`, `sicog generate` and `sicog evaluate`: `--precision auto|fp32|bf16`
(or `precision:` in the stage YAML for training), defaulting to the `SICOG_PRECISION` environment
variable, else `auto`.

- `fp32`: everything in float32, exactly as before this setting existed.
- `bf16`: `torch.autocast(dtype=bfloat16)` around the forward pass. The weights stay fp32 (the
  optimizer's master copy when training); matmuls and attention run in bf16, reductions,
  normalisations, softmax and the loss in fp32 (autocast's own op lists, plus our explicit casts:
  the resampler's `roi_align` and the chunked cross-entropy upcast, the sampler's logits).
- `auto`: bf16 where the device computes it natively (a CPU with AVX512-BF16 or AMX, a CUDA
  device that supports bf16), fp32 elsewhere; the choice is logged once, with the reason.

On a CPU without native bf16, autocast still runs but emulates bf16 and is slower than fp32,
so `auto` keeps fp32 there.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
ENV_VAR = "SICOG_PRECISION"
# CPU flags worth recording next to a throughput figure (what the matmul kernels can use).
NOTABLE_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16", "amx_tile",
                 "amx_int8")
_logged: set[tuple] = set()

# Weight dtypes by the names `--dtype` flags take ("auto" is each command's own choice, not listed).
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def dtype_named(name: str) -> torch.dtype:
    """The torch dtype of a `--dtype` name; ValueError listing the names otherwise."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use {', '.join(DTYPES)}") from None


def default_precision() -> str:
    """`SICOG_PRECISION` when set (checked), else auto."""
    value = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    return check_precision(value, ENV_VAR)


def check_precision(value: str, what: str = "precision") -> str:
    value = str(value).strip().lower()
    if value not in PRECISIONS:
        raise ValueError(f"{what} must be one of {'|'.join(PRECISIONS)}, got {value!r}")
    return value


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), as PyTorch's own kernels see it."""
    cpu = torch.cpu
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        if fn is not None:
            try:
                if fn():
                    return True
            except RuntimeError:  # a build without the probe's backend
                continue
    return False


def cpu_flags() -> list[str]:
    """The notable SIMD/matrix flags of this CPU (from /proc/cpuinfo; empty where unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return [f for f in NOTABLE_FLAGS if f in have]
    return []


def machine_line() -> str:
    """One line for logs and benchmark output: CPU flags and torch threads."""
    flags = cpu_flags()
    return (f"CPU flags: {' '.join(flags) if flags else 'unknown'}; native bf16: "
            f"{'yes' if cpu_bf16_supported() else 'no'}; torch threads: {torch.get_num_threads()}")


def resolve_precision(requested: str, device: str | torch.device = "cpu", log_choice: bool = True) -> str:
    """`fp32` or `bf16` for `requested` (auto|fp32|bf16) on `device`; logs the choice once per process."""
    requested = check_precision(requested)
    device = torch.device(device)
    if device.type == "cuda":
        native = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        why = "this CUDA device supports bf16" if native else "this CUDA device lacks bf16"
    elif device.type == "cpu":
        native = cpu_bf16_supported()
        why = ("this CPU has native bf16 (AVX512-BF16 or AMX)" if native else
               "this CPU has neither AVX512-BF16 nor AMX (bf16 would be emulated, slower than fp32)")
    else:
        native, why = False, f"auto does not choose bf16 on {device.type}"
    chosen = ("bf16" if native else "fp32") if requested == "auto" else requested
    if log_choice:
        note = f"{requested} -> {chosen}" if requested == "auto" else f"{chosen} (as asked)"
        if requested == "bf16" and not native:
            note += f"; warning: {why}"
        elif requested == "auto":
            note += f": {why}"
        key = (requested, chosen, device.type)
        if key not in _logged:
            _logged.add(key)
            log.info("precision %s%s; %s", note, " (autocast over fp32 weights)" if chosen == "bf16" else "",
                     machine_line() if device.type == "cpu" else f"device {device}")
    return chosen


def autocast(precision: str, device: str | torch.device = "cpu") -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` for precision `bf16`; a no-op context for `fp32`."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"autocast needs a resolved precision (fp32|bf16), got {precision!r}")
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
