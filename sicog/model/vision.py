"""The CLIP vision tower run up to the feature layer, in the same call order for every image size.

`feature_states(tower, pixels, n)` equals `tower(pixels, output_hidden_states=True,
interpolate_pos_encoding=True).hidden_states[n]` without running the layers above `n`: CLIP's
public forward runs every layer, so the encoder's loop is repeated here, truncated, calling each
layer as `CLIPEncoder.forward` does.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionModel


def layers_to_run(tower: CLIPVisionModel, feature_layer: int) -> int:
    """CLIP layers run to reach `hidden_states[feature_layer]` (k = 0 the embeddings, negative from the top)."""
    total = len(tower.encoder.layers)
    n = total + 1 + feature_layer if feature_layer < 0 else feature_layer
    if not 0 <= n <= total:
        raise ValueError(f"vision_feature_layer {feature_layer} is out of range for a {total}-layer vision tower")
    return n


def feature_states(tower: CLIPVisionModel, pixels: torch.Tensor, n_layers: int) -> torch.Tensor:
    """[N, 3, h, w] -> the hidden states [N, 1 + (h/p)*(w/p), C] after the first `n_layers` layers."""
    hidden = tower.pre_layrnorm(embeddings(tower, pixels.to(tower.dtype)))
    for layer in tower.encoder.layers[:n_layers]:
        # hidden states positional, the rest by keyword, as CLIPEncoder.forward calls its layers
        # (and as GradientCheckpointingLayer asks, for reentrant checkpointing)
        hidden = layer(hidden, attention_mask=None)
    return hidden


def embeddings(tower: CLIPVisionModel, pixels: torch.Tensor) -> torch.Tensor:
    """CLS + patch embeddings + position embeddings interpolated (bicubic) to this image size.

    Equal to CLIP's `embeddings(pixels, interpolate_pos_encoding=True)`, but computed so that
    every call runs the same modules in the same order whatever the image size. CLIP's own
    version calls the `position_embedding` module at its native square size and, at any other
    size, reads `position_embedding.weight` without calling that module. Under ZeRO-3 a
    module's weights are gathered when it is called, and each rank replays the call order it
    recorded to prefetch the next weights; so a rank encoding a native-size image (or the blank
    image of `SicogModel._idle_vision_term`) and a rank encoding a slice or overview of another
    size would gather in different orders: "collective mismatch" on gloo, a hang on NCCL. Here the
    `position_embedding` module is always called and its output (the 2-D table) interpolated.
    `class_embedding`, the only parameter of `embeddings` itself (a module this code never
    calls), is registered with DeepSpeed as gathered together with `patch_embedding`; without
    ZeRO-3 that registration is an unused attribute.
    """
    emb = tower.embeddings
    if getattr(emb.class_embedding, "ds_id", None) is not None:  # a ZeRO-3 partitioned parameter
        import deepspeed

        deepspeed.zero.register_external_parameter(emb.patch_embedding, emb.class_embedding)
    n, _, h, w = pixels.shape
    patches = emb.patch_embedding(pixels).flatten(2).transpose(1, 2)          # [N, (h/p)*(w/p), C]
    table = emb.position_embedding(emb.position_ids)                           # [1, 1 + G*G, C]
    grid = int(round((table.shape[1] - 1) ** 0.5))
    gh, gw = h // emb.patch_size, w // emb.patch_size
    if (gh, gw) != (grid, grid):
        cls_pos, patch_pos = table[:, :1], table[:, 1:]
        patch_pos = patch_pos.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        patch_pos = nn.functional.interpolate(patch_pos, size=(gh, gw), mode="bicubic", align_corners=False)
        table = torch.cat([cls_pos, patch_pos.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)], dim=1)
    cls = emb.class_embedding.expand(n, 1, -1)
    return torch.cat([cls, patches], dim=1) + table
