"""The candidate engine: one prefill per batch, the KV cache expanded N times, our own decode loop.

For a batch of B inputs and N candidates each, the images are encoded and the prompts prefilled
once (B rows); the cache is then repeated to B*N rows and decoded step by step. Rows stop at an
end token on their own; finished rows are dropped from the cache (checked every step on CPU, every
few steps elsewhere, where the check is a host synchronisation); the loop ends when every row has
finished or the token budget is spent. For SICOG's Qwen2 LLM the steps run over preallocated
key/value buffers (`qwen2_steps`), giving the generic path's candidates bit for bit in fp32; any
other causal LM steps through its own forward. A reference-style loop (one `generate` call per
input and candidate) repeats the image encoding and the prefill N times and decodes one row at a
time.
"""
from __future__ import annotations

import logging
from functools import partial

import numpy as np
import torch

from sicog.generate.qwen2_steps import Qwen2Steps, qwen2_decoder
from sicog.generate.sampling import choose_tokens, row_keys, uniforms
from sicog.generate.settings import SamplingSettings  # noqa: F401  (re-exported)
from sicog.model.precision import autocast
from sicog.runtime import to_device

log = logging.getLogger(__name__)


class _TransformersSteps:
    """The generic decoding step: the model's own forward over its cache (any HF causal LM)."""

    def __init__(self, model, cache, mask: torch.Tensor, repeats: int):
        cache.batch_repeat_interleave(repeats)
        self.model, self.cache, self.mask = model, cache, mask.repeat_interleave(repeats, dim=0)

    def keep(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)
        self.mask = self.mask[rows]

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=-1)
        out = self.model(input_ids=tokens.unsqueeze(-1), attention_mask=self.mask, position_ids=positions,
                         cache=self.cache, use_cache=True)
        self.cache = out.cache
        return out.logits[:, -1, :]


def decoding_steps(model, cache, mask: torch.Tensor, repeats: int, capacity: int, generic: bool = False):
    """The step function for `model`: `Qwen2Steps` where it applies, else the model's own forward."""
    decoder = None if generic else qwen2_decoder(model)
    if decoder is None:
        return _TransformersSteps(model, cache, mask, repeats)
    return Qwen2Steps(model, decoder, cache, mask, repeats, capacity)


@torch.no_grad()
def decode_candidates(
    language_model,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    keys: list[list[int]],
    settings: SamplingSettings,
    eos_token_ids: list[int],
    suppress_token_ids: list[int] = (),
    check_every: int | None = None,
    generic: bool = False,
) -> list[list[list[int]]]:
    """Token ids (end token excluded) of `len(keys[b])` candidates for each of the B left-padded rows.

    `language_model` is a SICOG model or any HF causal LM taking `inputs_embeds`; `keys[b][k]` is the random key of
    candidate k of row b (see `sampling.row_keys`); `suppress_token_ids` are never generated. Finished rows are
    looked for, and dropped, every `check_every` steps (the only host synchronisation of the loop; default 1 on
    CPU, where it costs nothing, and 8 elsewhere); a finished row decodes on until then and its extra tokens are
    discarded, so the candidates do not depend on it. `generic` forces the model's own forward for every step
    (`decoding_steps`; the benchmark's baseline).
    """
    batch, n = inputs_embeds.shape[0], len(keys[0])
    if any(len(k) != n for k in keys) or len(keys) != batch:
        raise ValueError("keys must hold the same number of candidates for every row")
    device = inputs_embeds.device
    check_every = check_every or (1 if device.type == "cpu" else 8)
    budget = settings.max_new_tokens
    mask = attention_mask.to(device=device, dtype=torch.long)
    positions = (mask.cumsum(-1) - 1).masked_fill_(mask == 0, 0)
    out = language_model(
        inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
    )
    # Expand the prefilled state to one row per candidate (row b*n + k is candidate k of input b).
    step_fn = decoding_steps(language_model, out.cache, mask, n, budget, generic)
    logits = out.logits[:, -1, :].repeat_interleave(n, dim=0)
    next_pos = positions[:, -1:].repeat_interleave(n, dim=0) + 1
    row_key = np.array([k for row in keys for k in row], dtype=np.uint64)
    live = np.arange(batch * n)  # original row of each row still decoding
    live_t = torch.arange(batch * n, device=device)
    eos = torch.tensor(sorted(set(eos_token_ids)), device=device, dtype=torch.long)
    suppress = torch.tensor(sorted(set(suppress_token_ids)), device=device, dtype=torch.long)
    tokens = torch.full((batch * n, budget), -1, dtype=torch.long, device=device)  # -1: after the end
    done = torch.zeros(batch * n, dtype=torch.bool, device=device)  # per original row
    for step in range(budget):
        logits = logits.float()  # sample from fp32 logits under autocast
        if suppress.numel():
            logits = logits.index_fill(-1, suppress, float("-inf"))
        if step < settings.min_new_tokens and eos.numel():
            logits = logits.index_fill(-1, eos, float("-inf"))
        u = torch.from_numpy(uniforms(row_key[live], step))
        chosen = choose_tokens(logits, u, settings.temperature, settings.top_p, settings.top_k)
        finished = torch.isin(chosen, eos) | done[live_t]
        tokens[live_t, step] = chosen.masked_fill(finished, -1)
        done[live_t] = finished
        if step == budget - 1:
            break
        if (step + 1) % check_every == 0:
            if bool(finished.all()):
                break
            if bool(finished.any()):
                keep = (~finished).nonzero().squeeze(-1)
                step_fn.keep(keep)
                live, live_t = live[keep.cpu().numpy()], live_t[keep]
                chosen, next_pos = chosen[keep], next_pos[keep]
        logits = step_fn(chosen, next_pos)
        next_pos = next_pos + 1
    rows = [[t for t in row if t >= 0] for row in tokens.tolist()]
    return [rows[b * n:(b + 1) * n] for b in range(batch)]


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

    def __init__(self, model, processor, settings: SamplingSettings, precision: str = "fp32",
                 generic_steps: bool = False):
        """`precision`: fp32, or bf16 (autocast over the model's weights; sicog.model.precision);
        `generic_steps`: decode through the model's own forward even where `qwen2_steps` applies."""
        self.model = model.eval()
        self.processor = processor
        self.settings = settings
        self.tokenizer = processor.tokenizer
        self.eos_ids = eos_ids_of(model, self.tokenizer)
        # An `<image>` token in a candidate has no image behind it: never generate one.
        self.suppress_ids = [processor.image_token_id]
        self.device = next(model.parameters()).device
        self.precision = precision
        self.generic_steps = generic_steps
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
                                                self.eos_ids, self.suppress_ids, generic=self.generic_steps)
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
