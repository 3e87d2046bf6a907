"""Decoding steps for a Qwen2 language model over preallocated key/value buffers.

The candidate engine's generic path calls the transformers model once per new token: every call
builds a 4-D mask, grows each layer's cache by concatenation (a copy of the whole cache per layer
and step) and goes through the model's Python wrappers. For the one architecture SICOG's LLM has
(`Qwen2Model`, SDPA attention, no sliding window), `Qwen2Steps` runs the same operations on the
same weights itself: keys and values are written in place into buffers sized for the whole
generation, attention reads a view of the filled part, and the padding mask is a view of one
preallocated boolean buffer. In fp32 the logits are those of the generic path bit for bit (the
tests compare the two paths' candidates); anything else falls back to the generic path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.models.qwen2.modeling_qwen2 import Qwen2Model, apply_rotary_pos_emb


def qwen2_decoder(model) -> Qwen2Model | None:
    """The model's Qwen2 decoder if `Qwen2Steps` can run it, else None (the generic path runs it)."""
    get = getattr(model, "get_decoder", None)
    decoder = get() if callable(get) else None
    if not isinstance(decoder, Qwen2Model) or model.get_output_embeddings() is None:
        return None
    cfg = decoder.config
    if cfg._attn_implementation != "sdpa" or any(t != "full_attention" for t in cfg.layer_types):
        return None
    return decoder


class Qwen2Steps:
    """One new token per row and step; rows can be dropped; `capacity` new tokens at most."""

    def __init__(self, model, decoder: Qwen2Model, cache, mask: torch.Tensor, repeats: int, capacity: int):
        """`cache`: the prefill's cache (B rows); `mask`: its [B, L] padding mask; each row is repeated
        `repeats` times (row b*repeats + k is candidate k of input b)."""
        self.decoder, self.lm_head = decoder, model.get_output_embeddings()
        first = decoder.layers[0].self_attn
        self.head_dim, self.groups, self.scaling = first.head_dim, first.num_key_value_groups, first.scaling
        prompt = mask.shape[1]
        self.length = prompt  # filled columns of every buffer
        self.keys, self.values = [], []
        for layer in cache.layers:
            k, v = layer.keys.repeat_interleave(repeats, dim=0), layer.values.repeat_interleave(repeats, dim=0)
            kb = k.new_empty(k.shape[0], k.shape[1], prompt + capacity, k.shape[3])
            vb = v.new_empty(v.shape[0], v.shape[1], prompt + capacity, v.shape[3])
            kb[:, :, :prompt], vb[:, :, :prompt] = k, v
            self.keys.append(kb)
            self.values.append(vb)
        padded = not bool(mask.all())
        # SDPA's mask for one query: [R, 1, 1, L], True where the key is attended; None without padding,
        # which is what transformers passes then (and what selects the same SDPA kernel).
        self.mask = None
        if padded:
            self.mask = mask.new_ones(mask.shape[0] * repeats, 1, 1, prompt + capacity, dtype=torch.bool)
            self.mask[:, 0, 0, :prompt] = mask.bool().repeat_interleave(repeats, dim=0)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only these rows (indices into the current rows)."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]
        if self.mask is not None:
            self.mask = self.mask.index_select(0, rows)

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits [R, V] of the next token after `tokens` [R] at `positions` [R, 1]."""
        d = self.decoder
        t = self.length
        if t >= self.keys[0].shape[2]:
            raise RuntimeError("Qwen2Steps: more steps than the capacity it was built for")
        hidden = d.embed_tokens(tokens.unsqueeze(-1))
        cos, sin = d.rotary_emb(hidden, positions)
        mask = None if self.mask is None else self.mask[..., :t + 1]
        rows = hidden.shape[0]
        for i, layer in enumerate(d.layers):
            attn = layer.self_attn
            residual = hidden
            h = layer.input_layernorm(hidden)
            q = attn.q_proj(h).view(rows, 1, -1, self.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(rows, 1, -1, self.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(rows, 1, -1, self.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            self.keys[i][:, :, t:t + 1] = k
            self.values[i][:, :, t:t + 1] = v
            keys, values = self.keys[i][:, :, :t + 1], self.values[i][:, :, :t + 1]
            if self.groups > 1 and mask is None and self.head_dim <= 256:
                out = F.scaled_dot_product_attention(q, keys, values, scale=self.scaling, enable_gqa=True)
            else:  # one query: the heads of a group become its query rows
                out = F.scaled_dot_product_attention(q.reshape(rows, -1, self.groups, self.head_dim), keys, values,
                                                     attn_mask=mask, scale=self.scaling)
            out = out.reshape(rows, -1, 1, self.head_dim).transpose(1, 2).reshape(rows, 1, -1)
            hidden = residual + attn.o_proj(out)
            residual = hidden
            hidden = residual + layer.mlp(layer.post_attention_layernorm(hidden))
        self.length = t + 1
        return self.lm_head(d.norm(hidden))[:, -1, :]
