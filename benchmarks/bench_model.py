"""Image encoding speed: grouped, vectorised encoding against a reference-style per-unit loop.

Both run the same random tiny SICOG model on the same sliced images and produce the same
features (the script checks it):

- reference: one vision-tower call per overview and per slice, the feature map cut short of the
  unused layers by `output_hidden_states` (all layers run), and the resampler evaluated window by
  window (one ROI-align and one attention per query);
- ours: `model.get_image_features`: equal-size overviews and slices of all images in one vision-tower
  call that stops at the feature layer, the resampler batched over maps and windows.

It then reports training throughput (forward + backward + AdamW step) of the whole model on a
batch of captioning records, in tokens per second.

    python benchmarks/bench_model.py [--images 8] [--threads 2] [--steps 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.ops import roi_align

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny-model fixtures
from tiny_models import build_random_tiny  # noqa: E402
from sicog.model.resampler import key_positions, pool_shape, sincos_table

CAPTION = ("Step 1: The image shows a red circle to the left of a blue square on a white background. "
           "Step 5: A small green triangle is above a large yellow star. The letter A is printed on it. ") * 3


def make_images(n: int, seed: int = 0) -> list[Image.Image]:
    g = torch.Generator().manual_seed(seed)
    sizes = [(320, 240), (240, 320), (400, 300), (320, 240), (500, 200), (256, 256), (320, 240), (300, 400)]
    out = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        img = Image.fromarray((torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy())
        ImageDraw.Draw(img).ellipse([10, 10, 60 + 5 * i, 70], fill=(220, 40, 40))
        out.append(img)
    return out


def reference_resampler(r, maps: torch.Tensor) -> torch.Tensor:
    """The resampler one window at a time (same weights): [1, h, w, C] -> [1, Q*Q, D]."""
    _, h, w, _ = maps.shape
    q, d, nh = r.query_grid, r.embed_dim, r.num_heads
    x = r.ln_kv(r.kv_proj(maps))
    pos = key_positions(q, d, h, w).view(1, h, w, d)
    ph, pw = pool_shape(h, w)
    queries = r.ln_q(r.query) + sincos_table(q, d)
    tokens = []
    for i in range(q):
        for j in range(q):
            box = torch.tensor([[0, j * w / q, i * h / q, (j + 1) * w / q, (i + 1) * h / q]])
            v = roi_align(x.permute(0, 3, 1, 2), box, (ph, pw), 1.0, -1, False).flatten(2).transpose(1, 2)[0]
            p = roi_align(pos.permute(0, 3, 1, 2), box, (ph, pw), 1.0, -1, False).flatten(2).transpose(1, 2)[0]
            qh = r.q_proj(queries[i * q + j]).view(nh, 1, d // nh)
            kh = r.k_proj(v + p).view(-1, nh, d // nh).transpose(0, 1)
            vh = r.v_proj(v).view(-1, nh, d // nh).transpose(0, 1)
            tokens.append(r.out_proj(F.scaled_dot_product_attention(qh, kh, vh).reshape(d)))
    return r.proj(r.ln_post(torch.stack(tokens)))[None]


def reference_encode(model, images) -> list[torch.Tensor]:
    patch, q = model.config.patch_size, model.config.query_grid
    result = []
    for im in images:
        units = [im.overview] + (list(im.slices.unbind(0)) if im.slices is not None else [])
        toks = []
        for u in units:
            hs = model.vision_tower(pixel_values=u[None], output_hidden_states=True, interpolate_pos_encoding=True)
            f = hs.hidden_states[model.config.vision_feature_layer][:, 1:]
            h, w = u.shape[-2] // patch, u.shape[-1] // patch
            toks.append(reference_resampler(model.projector, f.reshape(1, h, w, -1))[0])
        if im.slices is None:
            result.append(toks[0])
            continue
        cols, rows = im.grid
        sl = torch.stack(toks[1:]).view(rows, cols, q, q, -1).permute(0, 2, 1, 3, 4).reshape(-1, toks[0].shape[-1])
        result.append(torch.cat([sl, toks[0]]))
    return result


def timed(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, proc = build_random_tiny(seed=0)
    pil = make_images(args.images)
    images = [proc.preprocess(im) for im in pil]
    units = sum(1 + (0 if im.slices is None else len(im.slices)) for im in images)

    with torch.no_grad():
        t_ref, ref = timed(lambda: reference_encode(model, images), args.repeat)
        t_ours, ours = timed(lambda: model.get_image_features(images), args.repeat)
    err = max((a - b).abs().max().item() for a, b in zip(ref, ours))
    print(f"image encoding, {args.images} images / {units} overviews+slices, {args.threads} threads")
    print(f"  reference (per unit, per window): {t_ref * 1000:8.1f} ms")
    print(f"  grouped + vectorised:             {t_ours * 1000:8.1f} ms")
    print(f"  speed-up: {t_ref / t_ours:.1f}x   (max |difference| {err:.2e})")

    conv = [{"from": "human", "value": "<image>\nPlease generate a detailed caption of this image. "
                                       "Describe the image step-by-step."},
            {"from": "gpt", "value": CAPTION}]
    batch = proc.collate([proc.encode(conv, im) for im in pil])
    tokens = int(batch["attention_mask"].sum())
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    t_step, _ = timed(step, args.steps)
    print(f"training step, batch {tuple(batch['input_ids'].shape)} ({tokens} tokens incl. "
          f"{int((batch['input_ids'] == proc.image_token_id).sum())} image positions)")
    print(f"  {t_step:.3f} s/step   {tokens / t_step:,.0f} tokens/s")


if __name__ == "__main__":
    main()
