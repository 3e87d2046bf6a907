"""The adaptive spatial resampler of LLaVA-UHD v1 (SPEC section 3).

The resampler turns a CLIP feature map of any size (h x w patches) into Q*Q tokens:

    x      = LayerNorm(Linear_nobias(features))                   (CLIP width -> LLM width)
    keys   = x + the Q x Q sin-cos table interpolated bicubically to h x w;  values = x
    the map is cut into Q x Q equal (float-sized) windows; each window is ROI-aligned
    (torchvision defaults) to a small point grid whose shape follows the map's aspect ratio
    query (i, j) = LayerNorm(learned query) + table[i, j] attends only to its own window
    out    = LayerNorm(attention) @ proj                            (here a bias-free Linear)

Conventions are the authors' (their released weights depend on them, so they are the default at
every tier): the table puts the column (width) half first, key positions are a bicubic
interpolation of that fixed table, windows are pooled to 2-4 points per side (6-12 in all) and
`roi_align` runs with aligned=False and an adaptive sampling ratio. Golden outputs of their module
pin this in tests/test_authors_resampler.py.

All windows of all maps in a call share one shape, so the attention runs as one batched
`scaled_dot_product_attention` over (maps x windows) with one query each.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

# Point grids (rows, cols) a window may be pooled to, in the order ties are decided.
POOL_SHAPES = ((2, 4), (2, 3), (3, 4), (3, 3), (4, 2), (3, 2), (4, 3))


def sincos_1d(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """[N] positions -> [N, dim] (sin | cos) embedding, computed in float32."""
    omega = 1.0 / torch.pow(10000.0, torch.arange(dim // 2, dtype=torch.float32) / (dim / 2))
    angles = pos.to(torch.float32)[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


@functools.lru_cache(maxsize=8)
def sincos_table(grid: int, dim: int) -> torch.Tensor:
    """[grid*grid, dim] fixed 2-D sin-cos table, row-major over (row i, column j).

    Entry (i, j) is [sincos(j) | sincos(i)]: the column (width) half first, as in the authors'
    table, which their released checkpoints store as `mm_projector.pos_embed`.
    """
    if dim % 4:
        raise ValueError(f"sin-cos table width {dim} must be divisible by 4")
    idx = torch.arange(grid, dtype=torch.float32)
    rows, cols = torch.meshgrid(idx, idx, indexing="ij")
    return torch.cat([sincos_1d(cols.reshape(-1), dim // 2), sincos_1d(rows.reshape(-1), dim // 2)], dim=1)


@functools.lru_cache(maxsize=256)
def _key_positions_cpu(grid: int, dim: int, height: int, width: int, dtype: torch.dtype) -> torch.Tensor:
    table = sincos_table(grid, dim).to(dtype).float()          # the table as a `dtype` checkpoint holds it
    img = table.view(1, grid, grid, dim).permute(0, 3, 1, 2)
    out = F.interpolate(img, size=(height, width), mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(height, width, dim).to(dtype)


def key_positions(grid: int, dim: int, height: int, width: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """[height, width, dim]: the grid x grid table resized bicubically (align_corners=False). Cached."""
    return _key_positions_cpu(grid, dim, height, width, dtype).to(device)


def pool_shape(height: int, width: int) -> tuple[int, int]:
    """Points (rows, cols) per window: the POOL_SHAPES entry closest in log aspect to the map's w/h."""
    log_aspect = math.log(width / height)
    return min(POOL_SHAPES, key=lambda s: abs(log_aspect - math.log(s[1] / s[0])))


class SpatialResampler(nn.Module):
    def __init__(self, query_grid: int, embed_dim: int, kv_dim: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        if embed_dim % 4 or embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by 4 and by num_heads {num_heads}")
        self.query_grid = query_grid
        self.embed_dim = embed_dim
        self.num_heads = num_heads
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
        wh, ww = height / q, width / q
        one = torch.tensor([[j * ww, i * wh, j * ww + ww, i * wh + wh] for i in range(q) for j in range(q)],
                           dtype=torch.float64).float()
        idx = torch.arange(batch, dtype=torch.float32).repeat_interleave(q * q)[:, None]
        return torch.cat([idx, one.repeat(batch, 1)], dim=1).to(device)

    def pool_windows(self, x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
        """[B, h, w, C] -> [B*Q*Q, ph*pw, C]: each of the Q x Q windows ROI-aligned to ph x pw points."""
        b, h, w, _ = x.shape
        boxes = self.window_boxes(b, h, w, x.device)
        feat = x.permute(0, 3, 1, 2).float()                                      # roi_align wants fp32 on CPU
        pooled = roi_align(feat, boxes, (ph, pw), spatial_scale=1.0, sampling_ratio=-1, aligned=False)
        return pooled.to(x.dtype).flatten(2).transpose(1, 2)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """maps [B, h, w, kv_dim] -> tokens [B, Q*Q, embed_dim]."""
        b, h, w, _ = maps.shape
        q, d, nh = self.query_grid, self.embed_dim, self.num_heads
        x = self.ln_kv(self.kv_proj(maps))                                        # [B, h, w, D]
        ph, pw = pool_shape(h, w)
        n, p, hd = b * q * q, ph * pw, d // nh
        values = self.pool_windows(x, ph, pw)                                     # [B*Q*Q, P, D]
        # keys = values + positions; ROI-align is linear, so the positions are pooled once per map size
        pos = key_positions(q, d, h, w, x.dtype, x.device).unsqueeze(0)
        keys = values.view(b, q * q, p, d) + self.pool_windows(pos, ph, pw).view(1, q * q, p, d)

        table = sincos_table(q, d).to(device=x.device, dtype=x.dtype)
        qh = self.q_proj(self.ln_q(self.query) + table).view(1, q * q, nh, hd)  # shared by all maps
        qh = qh.expand(b, -1, -1, -1).reshape(n, nh, 1, hd)
        kh = self.k_proj(keys).view(n, p, nh, hd).transpose(1, 2)
        vh = self.v_proj(values).view(n, p, nh, hd).transpose(1, 2)
        att = F.scaled_dot_product_attention(qh, kh, vh)                         # [N, H, 1, hd]
        out = self.out_proj(att.reshape(n, d)).view(b, q * q, d)
        return self.proj(self.ln_post(out))
