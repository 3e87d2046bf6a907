"""GPU smoke test: does the model train and generate on one CUDA device, and how fast?

Two random models, in bf16, with flash-attn when it is installed and PyTorch SDPA otherwise:
- the tiny tier (configs/tiers/tiny.yaml);
- a paper-width model: CLIP ViT-L/14-336 and Qwen2-7B widths (vocabulary 152,064, 7 slices of
  336 px, 12x12 resampler queries) with 2 vision and 2 LLM layers.
For each: forward + backward of a batch of sliced-image captions (training tokens/s), greedy
generation with the KV cache (new tokens/s), and the peak memory of each.

    python benchmarks/gpu_smoke.py                 # CUDA device 0; without one: 'no CUDA device: skipped', exit 0
    python benchmarks/gpu_smoke.py --cpu-tiny      # the tiny tier on CPU in fp32 (a check that the script runs)
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch
from PIL import Image

CAPTION = ("Step 1: A red circle sits left of a blue square on a white background. Step 2: The circle is "
           "large and the square small, with the letter A printed on it. ") * 4


def build(tier: str, attn: str, dtype: torch.dtype, device: str):
    """(model, processor) at random init: the tiny tier, or paper widths with 2 + 2 layers."""
    from transformers import CLIPVisionConfig, Qwen2Config

    from sicog.model.build import _set_generation_ids, _set_special_ids
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny-model fixtures
    from tiny_models import build_random_tiny, builtin_tokenizer  # noqa: E402
    from sicog.model.configuration import SicogConfig
    from sicog.model.modeling import SicogForConditionalGeneration
    from sicog.model.processing import SicogProcessor
    from sicog.train.plan import PAPER_TEXT, PAPER_VISION
    from sicog.model.tiers import load_tier
    from sicog.world.tokenizer import IMAGE

    torch.manual_seed(0)
    if tier == "tiny":
        model, processor = build_random_tiny(seed=0)
    else:
        tok = builtin_tokenizer()
        text = Qwen2Config(**{**PAPER_TEXT, "num_hidden_layers": 2})
        _set_special_ids(text, tok)
        fields = {k: v for k, v in load_tier("paper")["model"].items() if k != "patch_size"}
        config = SicogConfig(vision_config=CLIPVisionConfig(**{**PAPER_VISION, "num_hidden_layers": 2}),
                             text_config=text, image_token_id=tok.convert_tokens_to_ids(IMAGE), **fields)
        model = SicogForConditionalGeneration(config)
        _set_generation_ids(model)
        processor = SicogProcessor.from_config(config, tok)
    model.config._attn_implementation = attn
    for part in (model.config.text_config, model.config.vision_config):
        part._attn_implementation = attn
    return model.to(device=device, dtype=dtype), processor


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 1024**3 if device == "cuda" else None


def run_tier(tier: str, device: str, dtype: torch.dtype, attn: str, batch: int, iters: int, new_tokens: int) -> dict:
    model, processor = build(tier, attn, dtype, device)
    scale = processor.layout.image_scale
    image = Image.new("RGB", (2 * scale, int(1.5 * scale)), "white")  # 4:3 at 3x the area: sliced
    conv = [{"from": "human", "value": "<image>\nDescribe the image step-by-step."}, {"from": "gpt", "value": CAPTION}]
    inputs = processor.collate([processor.encode(conv, image=image) for _ in range(batch)])
    tokens = int(inputs["attention_mask"].sum())
    inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
    n_params = sum(p.numel() for p in model.parameters())

    model.train()
    _reset_peak(device)
    times = []
    for _ in range(iters + 1):  # the first is warm-up
        _sync(device)
        t0 = time.perf_counter()
        out = model(**inputs).loss
        out.backward()
        loss = out.detach()
        _sync(device)
        times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    train_peak = _peak_gib(device)
    if not torch.isfinite(loss):
        raise RuntimeError(f"{tier}: the loss is {loss.item()}")

    model.eval()
    prompt = processor.encode(conv[:1], image=image, add_generation_prompt=True, for_generation=True)
    ids = prompt["input_ids"][None].to(device)
    _reset_peak(device)
    with torch.no_grad():
        gen = lambda: model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),  # noqa: E731
                                     images=[prompt["images"]], max_new_tokens=new_tokens,
                                     min_new_tokens=new_tokens, do_sample=False)
        gen()  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        out = gen()
        _sync(device)
        gen_time = time.perf_counter() - t0
    made = out.shape[1] - ids.shape[1]
    return {"tier": tier, "params": n_params, "batch tokens": tokens, "loss": loss.item(),
            "train tok/s": tokens * iters / sum(times[1:]), "train peak GiB": train_peak,
            "generate tok/s": made / gen_time, "generate peak GiB": _peak_gib(device), "new tokens": made}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-tiny", action="store_true", help="the tiny tier on CPU in fp32 (no CUDA needed)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args(argv)

    if args.cpu_tiny:
        device, dtype, tiers = "cpu", torch.float32, ["tiny"]
    elif not torch.cuda.is_available():
        print("no CUDA device: skipped")
        return 0
    else:
        device, dtype, tiers = "cuda", torch.bfloat16, ["tiny", "paper-width 2+2 layers"]
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    attn = "flash_attention_2" if device == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"
    where = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    print(f"device: {where}, dtype: {str(dtype).replace('torch.', '')}, attention: {attn}")
    rows = [run_tier("tiny" if t == "tiny" else "paper", device, dtype, attn, args.batch, args.iters,
                     args.new_tokens) for t in tiers]
    cols = ["tier", "params", "batch tokens", "loss", "train tok/s", "train peak GiB", "generate tok/s",
            "generate peak GiB"]
    print("  ".join(f"{c:>17}" for c in cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r[c]
            cells.append(f"{'-' if v is None else (f'{v:,}' if isinstance(v, int) else (f'{v:.2f}' if isinstance(v, float) else v)):>17}")
        print("  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
