"""Peak memory of the training loss at paper vocabulary: full logits (transformers' ForCausalLMLoss)
against `sicog.model.loss.supervised_lm_loss` (logits at supervised positions only, chunked fp32).

Each path runs forward + backward in its own child process (same inputs, same seed); the figure is
the child's peak resident memory above its baseline (the head, hidden states and labels already
built), so the two are directly comparable. On CUDA, torch.cuda.max_memory_allocated is used.

    python benchmarks/bench_loss_memory.py                       # 1 x 1024 tokens (minutes on 2 cores)
    python benchmarks/bench_loss_memory.py --batch 2 --seq 2048  # the issue's case; ~10 GB, slow on CPU
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _child(args) -> None:
    import torch
    from transformers.loss.loss_utils import ForCausalLMLoss

    from sicog.model.loss import supervised_lm_loss

    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    head = torch.nn.Linear(args.hidden, args.vocab, bias=False, device=device, dtype=dtype)
    head.weight.requires_grad_(False)  # its gradient (the same size either way) would hide the logits' cost
    hidden = torch.randn(args.batch, args.seq, args.hidden, device=device, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, args.vocab, (args.batch, args.seq), device=device)
    labels[:, : int(args.seq * (1 - args.supervised))] = -100  # the prompt part is not supervised
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    if args.path == "full":
        loss = ForCausalLMLoss(head(hidden), labels, args.vocab)
    else:
        loss = supervised_lm_loss(hidden, labels, head)
    loss.backward()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"loss": loss.item(), "peak_gb": (peak - base) / 2**30, "seconds": seconds,
                      "grad_sum": hidden.grad.float().abs().sum().item()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=3584)   # Qwen2-7B
    ap.add_argument("--vocab", type=int, default=152064)  # Qwen2
    ap.add_argument("--supervised", type=float, default=0.5, help="share of positions with a label")
    ap.add_argument("--path", choices=["full", "supervised"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.path:
        return _child(args)
    flags = [f"--{k}={v}" for k, v in vars(args).items() if k != "path"]
    res = {}
    for path in ("full", "supervised"):
        out = subprocess.run([sys.executable, __file__, *flags, f"--path={path}"], capture_output=True, text=True,
                             check=True)
        res[path] = json.loads(out.stdout.strip().splitlines()[-1])
    f, s = res["full"], res["supervised"]
    print(f"loss at {args.batch} x {args.seq} tokens, hidden {args.hidden}, vocab {args.vocab:,}, "
          f"{args.supervised:.0%} supervised")
    print(f"{'path':<12}{'peak GB':>10}{'seconds':>10}{'loss':>12}")
    for name, r in res.items():
        print(f"{name:<12}{r['peak_gb']:>10.2f}{r['seconds']:>10.1f}{r['loss']:>12.6f}")
    print(f"peak memory ratio full / supervised: {f['peak_gb'] / max(s['peak_gb'], 1e-9):.2f}x; "
          f"loss difference {abs(f['loss'] - s['loss']):.2e}; grad |sum| {f['grad_sum']:.4f} vs {s['grad_sum']:.4f}")


if __name__ == "__main__":
    main()
