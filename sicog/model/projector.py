"""Projectors from CLIP features to LLM embeddings, chosen by `config.projector_type`."""
from __future__ import annotations

import torch
from torch import nn

from .resampler import SpatialResampler


class MlpProjector(nn.Module):
    """Low-resolution LLaVA projector: Linear - GELU - Linear, one token per patch."""

    def __init__(self, kv_dim: int, embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(kv_dim, embed_dim)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """maps [B, h, w, kv_dim] -> tokens [B, h*w, embed_dim]."""
        return self.linear_2(self.act(self.linear_1(maps.flatten(1, 2))))


def build_projector(config) -> nn.Module:
    kv_dim = config.vision_config.hidden_size
    d = config.text_config.hidden_size
    if config.projector_type == "mlp":
        return MlpProjector(kv_dim, d)
    return SpatialResampler(
        query_grid=config.query_grid,
        embed_dim=d,
        kv_dim=kv_dim,
        num_heads=d // config.resampler_head_dim,
    )
