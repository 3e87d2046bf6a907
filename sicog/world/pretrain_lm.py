"""`sicog world pretrain`, the LM part: a small Qwen2ForCausalLM (text config from the tier, vocabulary
from the world's tokenizer) trained on `data/lm_text.txt`, then (`pretrain_instruct`) instruction-tuned
on `data/lm_chat.jsonl`, saved with the tokenizer as `OUT/llm/`."""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from sicog.model.tiers import load_tier
from sicog.world.pretrain_instruct import InstructPlan, instruct_lm
from sicog.world.pretrain_loop import full_batches, train_loop
from sicog.world.tokenizer import ENDOFTEXT, IM_END

log = logging.getLogger("sicog.world.pretrain")   # one logger name for the whole command

HELD_OUT_DOCS = 0.05


def _lm_blocks(tokenizer, docs: list[str], block: int):
    import torch

    eos = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    stream: list[int] = []
    for doc in docs:
        stream += tokenizer(doc, add_special_tokens=False)["input_ids"] + [eos]
    n = len(stream) // block
    if n == 0:
        raise ValueError(f"too little text for one block of {block} tokens ({len(stream)} tokens)")
    return torch.tensor(stream[: n * block]).view(n, block)


def perplexity(model, blocks, batch_size: int = 8) -> float:
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for chunk in blocks.split(batch_size):
            loss = model(input_ids=chunk, labels=chunk).loss
            total += float(loss) * chunk.numel()
            count += chunk.numel()
    return math.exp(total / count)


def pretrain_lm(world: Path, out: Path, tokenizer, steps: int, batch_size: int, block: int, lr: float, seed: int,
                instruct: InstructPlan | None = None) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tier = load_tier("tiny")
    text = (world / "data/lm_text.txt").read_text(encoding="utf-8")
    docs = [d.strip() for d in text.split(ENDOFTEXT) if d.strip()]
    n_held = max(1, int(len(docs) * HELD_OUT_DOCS))
    train_blocks = _lm_blocks(tokenizer, docs[:-n_held], block)
    held_blocks = _lm_blocks(tokenizer, docs[-n_held:], min(block, 64))[:32]

    torch.manual_seed(seed)
    config = Qwen2Config(**tier["text"], vocab_size=len(tokenizer),
                         bos_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
                         eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
                         pad_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT))
    model = Qwen2ForCausalLM(config).eval()
    ppl_before = perplexity(model, held_blocks)

    gen = torch.Generator().manual_seed(seed + 1)
    bs = min(batch_size, len(train_blocks))

    def batch(idx):
        chunk = train_blocks[idx]
        return {"input_ids": chunk, "labels": chunk}

    t0 = time.time()
    losses = train_loop(model, full_batches(len(train_blocks), bs, gen, batch), steps, lr, "pretrain LM")
    seconds = time.time() - t0
    ppl_after = perplexity(model, held_blocks)
    instruct_report = (instruct_lm(world, model, tokenizer, instruct, seed)
                       if instruct is not None and instruct.total_steps else None)
    model.eval()
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out / "llm")
    tokenizer.save_pretrained(out / "llm")
    log.info("LM held-out perplexity %.2f -> %.2f", ppl_before, ppl_after)
    return {"steps": steps, "batch_size": bs, "block": block, "lr": lr, "train_tokens": int(train_blocks.numel()),
            "seconds": round(seconds, 1), "tokens_per_second": round(steps * bs * block / max(seconds, 1e-9), 1),
            "losses": losses, "perplexity_before": ppl_before, "perplexity_after": ppl_after, "instruct": instruct_report}
