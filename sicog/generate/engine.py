"""The candidate engine: one prefill per batch, the KV cache expanded N times, our own decode loop.

For a batch of B inputs and N candidates each, the images are encoded and the prompts prefilled
once (B rows); the cache is then repeated to B*N rows and decoded step by step. Rows stop at an
end token on their own; finished rows are dropped from the cache; the loop ends when every row has
finished or the token budget is spent. A reference-style loop (one `generate` call per input and
candidate) repeats the image encoding and the prefill N times and decodes one row at a time.
"""
from __future__ import annotations

import logging
from functools import partial

import numpy as np
import torch

from sicog.generate.sampling import choose_tokens, row_keys, uniforms
from sicog.generate.settings import SamplingSettings  # noqa: F401  (re-exported)
from sicog.model.precision import autocast
from sicog.runtime import to_device

log = logging.getLogger(__name__)


@torch.no_grad()
def decode_candidates(
    language_model,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    keys: list[list[int]],
    settings: SamplingSettings,
    eos_token_ids: list[int],
    suppress_token_ids: list[int] = (),
) -> list[list[list[int]]]:
    """Token ids (end token excluded) of `len(keys[b])` candidates for each of the B left-padded rows.

    `language_model` is a SICOG model or any HF causal LM taking `inputs_embeds`; `keys[b][k]` is the random key of
    candidate k of row b (see `sampling.row_keys`); `suppress_token_ids` are never generated.
    """
    batch, n = inputs_embeds.shape[0], len(keys[0])
    if any(len(k) != n for k in keys) or len(keys) != batch:
        raise ValueError("keys must hold the same number of candidates for every row")
    device = inputs_embeds.device
    mask = attention_mask.to(device=device, dtype=torch.long)
    positions = (mask.cumsum(-1) - 1).masked_fill_(mask == 0, 0)
    out = language_model(
        inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
    )
    cache, logits = out.past_key_values, out.logits[:, -1, :].float()  # sample from fp32 logits under autocast
    # Expand the prefilled state to one row per candidate (row b*n + k is candidate k of input b).
    cache.batch_repeat_interleave(n)
    logits = logits.repeat_interleave(n, dim=0)
    mask = mask.repeat_interleave(n, dim=0)
    next_pos = positions[:, -1:].repeat_interleave(n, dim=0) + 1
    row_key = np.array([k for row in keys for k in row], dtype=np.uint64)
    live = np.arange(batch * n)  # original row of each row still decoding
    eos = torch.tensor(sorted(set(eos_token_ids)), device=device, dtype=torch.long)
    suppress = torch.tensor(sorted(set(suppress_token_ids)), device=device, dtype=torch.long)
    tokens: list[list[int]] = [[] for _ in range(batch * n)]
    for step in range(settings.max_new_tokens):
        if suppress.numel():
            logits = logits.index_fill(-1, suppress, float("-inf"))
        if step < settings.min_new_tokens and eos.numel():
            logits = logits.index_fill(-1, eos, float("-inf"))
        u = torch.from_numpy(uniforms(row_key[live], step))
        chosen = choose_tokens(logits, u, settings.temperature, settings.top_p, settings.top_k)
        finished = torch.isin(chosen, eos)
        for row, tok, done in zip(live.tolist(), chosen.tolist(), finished.tolist()):
            if not done:
                tokens[row].append(tok)
        if step == settings.max_new_tokens - 1 or bool(finished.all()):
            break
        if bool(finished.any()):
            keep = (~finished).nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            live, chosen = live[keep.cpu().numpy()], chosen[keep]
            mask, next_pos = mask[keep], next_pos[keep]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
        out = language_model(
            input_ids=chosen.unsqueeze(-1), attention_mask=mask, position_ids=next_pos,
            past_key_values=cache, use_cache=True,
        )
        cache, logits = out.past_key_values, out.logits[:, -1, :].float()
        next_pos = next_pos + 1
    return [tokens[b * n:(b + 1) * n] for b in range(batch)]


def eos_ids_of(model, tokenizer) -> list[int]:
    """End tokens: the model's generation config, else the tokenizer's eos."""
    cfg = getattr(model, "generation_config", None)
    ids = getattr(cfg, "eos_token_id", None) if cfg is not None else None
    if ids is None:
        ids = tokenizer.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if not ids:
        raise ValueError("neither the model's generation config nor the tokenizer defines an end token")
    return ids


class CandidateEngine:
    """Candidates for batches of encoded inputs with a SICOG model and its processor."""

    def __init__(self, model, processor, settings: SamplingSettings, precision: str = "fp32"):
        """`precision`: fp32, or bf16 (autocast over the model's weights; sicog.model.precision)."""
        self.model = model.eval()
        self.processor = processor
        self.settings = settings
        self.tokenizer = processor.tokenizer
        self.eos_ids = eos_ids_of(model, self.tokenizer)
        # An `<image>` token in a candidate has no image behind it: never generate one.
        self.suppress_ids = [processor.image_token_id]
        self.device = next(model.parameters()).device
        self.precision = precision
        self._autocast = partial(autocast, precision, self.device)  # checks precision now
        self._autocast()
        if settings.num_beams > 1:
            log.info("num_beams=%d: beam search runs through model.generate (one call per batch, "
                     "candidates = the top %d beams)", settings.num_beams, settings.num_candidates)

    def generate_ids(self, ids: list[str], items: list[dict]) -> list[list[list[int]]]:
        """Token ids (end token excluded) of the candidates of each item; `ids` key their randomness."""
        batch = self.processor.collate(items, padding_side="left")
        input_ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device)
        images = to_device(batch["images"], self.device)
        if self.settings.num_beams > 1:
            with self._autocast():
                token_lists = self._beam_search(ids, input_ids, mask, images)
        else:
            n = 1 if self.settings.greedy else self.settings.num_candidates  # greedy candidates coincide
            keys = [row_keys(self.settings.seed, rid, n) for rid in ids]
            with torch.no_grad(), self._autocast():
                embeds = self.model.embed_inputs(input_ids, images)
                token_lists = decode_candidates(self.model, embeds, mask, keys, self.settings,
                                                self.eos_ids, self.suppress_ids)
            if n != self.settings.num_candidates:
                token_lists = [rows * self.settings.num_candidates for rows in token_lists]
        return token_lists

    def text(self, token_ids: list[int]) -> str:
        """A candidate's text: special tokens dropped, surrounding whitespace stripped."""
        return self.tokenizer.decode(token_ids, skip_special_tokens=True).strip()

    def _beam_search(self, ids, input_ids, mask, images) -> list[list[list[int]]]:
        s = self.settings
        torch.manual_seed(s.seed)
        with torch.no_grad():
            seqs = self.model.generate(
                input_ids=input_ids, attention_mask=mask, images=images, max_new_tokens=s.max_new_tokens,
                min_new_tokens=s.min_new_tokens, num_beams=s.num_beams, num_return_sequences=s.num_candidates,
                do_sample=not s.greedy, temperature=s.temperature if not s.greedy else None,
                top_p=s.top_p if not s.greedy else None, top_k=s.top_k if not s.greedy else None,
                eos_token_id=self.eos_ids, pad_token_id=self.tokenizer.pad_token_id,
                suppress_tokens=self.suppress_ids,
            )
        prompt = input_ids.repeat_interleave(s.num_candidates, dim=0)
        echoed = seqs.shape[1] >= prompt.shape[1] and torch.equal(seqs[:, :prompt.shape[1]], prompt)
        new = seqs[:, prompt.shape[1]:] if echoed else seqs  # generate() echoes input_ids, not embeddings
        rows = [_until_eos(r, self.eos_ids) for r in new.tolist()]
        n = s.num_candidates
        return [rows[b * n:(b + 1) * n] for b in range(len(ids))]


def _until_eos(row: list[int], eos_ids: list[int]) -> list[int]:
    for i, t in enumerate(row):
        if t in eos_ids:
            return row[:i]
    return row
