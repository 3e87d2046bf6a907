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

import functools

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align


def sincos_1d(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """[N] positions -> [N, dim] (sin | cos) embedding."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2))
    angles = pos.to(torch.float64)[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


@functools.lru_cache(maxsize=256)
def _sincos_2d_cpu(height: int, width: int, dim: int, ref: float | None) -> torch.Tensor:
    ys = torch.arange(height, dtype=torch.float64)
    xs = torch.arange(width, dtype=torch.float64)
    if ref is not None:
        ys = (ys + 0.5) * ref / height - 0.5
        xs = (xs + 0.5) * ref / width - 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.cat([sincos_1d(gy.reshape(-1), dim // 2), sincos_1d(gx.reshape(-1), dim // 2)], dim=1).float()


def sincos_2d(height: int, width: int, dim: int, ref: float | None = None, device=None) -> torch.Tensor:
    """[height*width, dim] 2-D sin-cos positions (first half rows, second half columns).

    With `ref`, coordinates are scaled so that the map spans a ref x ref grid: a key map of any
    size gets the positions of the reference grid interpolated to its own. Cached per size.
    """
    return _sincos_2d_cpu(height, width, dim, ref).to(device)


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

    def pool_windows(self, x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
        """[B, h, w, C] -> [B*Q*Q, ph*pw, C]: each of the Q x Q windows ROI-aligned to ph x pw points."""
        b, h, w, _ = x.shape
        boxes = self.window_boxes(b, h, w, x.device)
        feat = x.permute(0, 3, 1, 2).float()                                      # roi_align wants fp32 on CPU
        pooled = roi_align(feat, boxes, (ph, pw), spatial_scale=1.0, sampling_ratio=2, aligned=True)
        return pooled.to(x.dtype).flatten(2).transpose(1, 2)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """maps [B, h, w, kv_dim] -> tokens [B, Q*Q, embed_dim]."""
        b, h, w, _ = maps.shape
        q, d, nh = self.query_grid, self.embed_dim, self.num_heads
        x = self.ln_kv(self.kv_proj(maps))                                        # [B, h, w, D]
        ph, pw = roi_shape(h, w, q, *self.roi_points)
        n, p, hd = b * q * q, ph * pw, d // nh
        values = self.pool_windows(x, ph, pw)                                     # [B*Q*Q, P, D]
        # keys = values + positions; ROI-align is linear, so the positions are pooled once per map size
        pos = sincos_2d(h, w, d, ref=self.ref_grid, device=x.device).view(1, h, w, d)
        keys = values.view(b, q * q, p, d) + self.pool_windows(pos, ph, pw).to(x.dtype).view(1, q * q, p, d)

        pos_q = sincos_2d(q, q, d, device=x.device).to(x.dtype)
        qh = self.q_proj(self.ln_q(self.query) + pos_q).view(1, q * q, nh, hd)   # shared by all maps
        qh = qh.expand(b, -1, -1, -1).reshape(n, nh, 1, hd)
        kh = self.k_proj(keys).view(n, p, nh, hd).transpose(1, 2)
        vh = self.v_proj(values).view(n, p, nh, hd).transpose(1, 2)
        att = F.scaled_dot_product_attention(qh, kh, vh)                         # [N, H, 1, hd]
        out = self.out_proj(att.reshape(n, d)).view(b, q * q, d)
        return self.proj(self.ln_post(out))
