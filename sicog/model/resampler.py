"""The adaptive spatial resampler of LLaVA-UHD v1 (SPEC section 3).

The resampler turns a CLIP feature map of any size (h x w patches) into Q*Q tokens:

    keys/values = LayerNorm(Linear_nobias(features))          (CLIP width -> LLM width)
    the map is cut into Q x Q windows; each window is ROI-aligned (torchvision) to a small
    grid of points whose shape follows the window's aspect ratio
    query (i, j) = LayerNorm(learned query) + sincos(i, j) attends only to its own window,
    whose keys carry sin-cos positions of the map interpolated to the reference grid
    out = Linear_nobias(LayerNorm(attention))

All windows of all maps in a call share one shape, so the attention runs as one batched
`scaled_dot_product_attention` over (maps x windows) with one query each.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align


def sincos_1d(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """[N] positions -> [N, dim] (sin | cos) embedding."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2))
    angles = pos.to(torch.float64)[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(height: int, width: int, dim: int, ref: float | None = None, device=None) -> torch.Tensor:
    """[height*width, dim] 2-D sin-cos positions (first half rows, second half columns).

    With `ref`, coordinates are scaled so that the map spans a ref x ref grid: a key map of any
    size gets the positions of the reference grid interpolated to its own.
    """
    ys = torch.arange(height, dtype=torch.float64, device=device)
    xs = torch.arange(width, dtype=torch.float64, device=device)
    if ref is not None:
        ys = (ys + 0.5) * ref / height - 0.5
        xs = (xs + 0.5) * ref / width - 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    emb = torch.cat([sincos_1d(gy.reshape(-1), dim // 2), sincos_1d(gx.reshape(-1), dim // 2)], dim=1)
    return emb.float()


def roi_shape(height: int, width: int, grid: int, lo: int, hi: int) -> tuple[int, int]:
    """Points (rows, cols) sampled per window: `lo` on the short side, the long side by aspect."""
    aspect = (width / grid) / (height / grid)
    if aspect >= 1:
        return lo, max(lo, min(hi, round(lo * aspect)))
    return max(lo, min(hi, round(lo / aspect))), lo


class SpatialResampler(nn.Module):
    def __init__(self, query_grid: int, embed_dim: int, kv_dim: int, num_heads: int,
                 ref_grid: int, roi_points: tuple[int, int] = (6, 12), eps: float = 1e-6):
        super().__init__()
        if embed_dim % 4 or embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by 4 and by num_heads {num_heads}")
        self.query_grid = query_grid
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.ref_grid = ref_grid
        self.roi_points = tuple(roi_points)
        self.query = nn.Parameter(torch.zeros(query_grid * query_grid, embed_dim))
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias=False)
        self.ln_q = nn.LayerNorm(embed_dim, eps=eps)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=eps)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.ln_post = nn.LayerNorm(embed_dim, eps=eps)
        self.proj = nn.Linear(embed_dim, embed_dim, bias=False)

    def window_boxes(self, batch: int, height: int, width: int, device) -> torch.Tensor:
        """[batch*Q*Q, 5] ROI boxes (batch index, x0, y0, x1, y1), row-major windows per map."""
        q = self.query_grid
        ys = torch.arange(q + 1, dtype=torch.float32, device=device) * (height / q)
        xs = torch.arange(q + 1, dtype=torch.float32, device=device) * (width / q)
        y0, x0 = torch.meshgrid(ys[:-1], xs[:-1], indexing="ij")
        y1, x1 = torch.meshgrid(ys[1:], xs[1:], indexing="ij")
        one = torch.stack([x0, y0, x1, y1], dim=-1).reshape(q * q, 4)
        idx = torch.arange(batch, dtype=torch.float32, device=device).repeat_interleave(q * q)[:, None]
        return torch.cat([idx, one.repeat(batch, 1)], dim=1)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """maps [B, h, w, kv_dim] -> tokens [B, Q*Q, embed_dim]."""
        b, h, w, _ = maps.shape
        q, d, nh = self.query_grid, self.embed_dim, self.num_heads
        x = self.ln_kv(self.kv_proj(maps))                                        # [B, h, w, D]
        pos_k = sincos_2d(h, w, d, ref=self.ref_grid, device=x.device).to(x.dtype).view(1, h, w, d)
        kv = torch.cat([x + pos_k, x], dim=-1).permute(0, 3, 1, 2)                # [B, 2D, h, w]
        ph, pw = roi_shape(h, w, q, *self.roi_points)
        boxes = self.window_boxes(b, h, w, x.device)
        pooled = roi_align(kv.float(), boxes, (ph, pw), spatial_scale=1.0, sampling_ratio=2, aligned=True)
        pooled = pooled.to(x.dtype).flatten(2).transpose(1, 2)                    # [B*Q*Q, P, 2D]
        keys, values = pooled[..., :d], pooled[..., d:]

        pos_q = sincos_2d(q, q, d, device=x.device).to(x.dtype)
        queries = (self.ln_q(self.query) + pos_q).repeat(b, 1)                    # [B*Q*Q, D]
        n, p, hd = b * q * q, ph * pw, d // nh
        qh = self.q_proj(queries).view(n, nh, 1, hd)
        kh = self.k_proj(keys).view(n, p, nh, hd).transpose(1, 2)
        vh = self.v_proj(values).view(n, p, nh, hd).transpose(1, 2)
        att = F.scaled_dot_product_attention(qh, kh, vh)                         # [N, H, 1, hd]
        out = self.out_proj(att.reshape(n, d)).view(b, q * q, d)
        return self.proj(self.ln_post(out))
