"""`sicog world pretrain`: the tiny tier's unimodal parts, trained on the world.

The paper starts from a pretrained CLIP and a pretrained LLM; the tiny tier starts from these:

- a small CLIP (vision tower from `configs/tiers/tiny.yaml`, a small text tower) trained with CLIP's
  contrastive loss on `data/clip_pretrain.jsonl`, its vision tower saved as `OUT/clip/`
  (CLIPVisionModel + CLIPImageProcessor);
- a small Qwen2ForCausalLM (text config from the tier, vocabulary from the world's tokenizer) trained
  on `data/lm_text.txt`, saved with the tokenizer as `OUT/llm/`.

`OUT/pretrain_report.json` holds the losses, the CLIP's zero-shot image-text retrieval accuracy on
held-out images and the LM's held-out perplexity, each before and after training.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from tqdm import tqdm

from sicog.data.records import read_records, write_json
from sicog.model.tiers import load_tier
from sicog.world.tokenizer import ENDOFTEXT, IM_END

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)   # the statistics CLIP image processors use
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_TEXT = dict(hidden_size=96, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=64)
DEFAULT_STEPS = {"clip": 300, "lm": 300}
HELD_OUT_IMAGES = 64
HELD_OUT_DOCS = 0.05


def _lr_at(step: int, steps: int, lr: float) -> float:
    warmup = max(1, min(20, steps // 10))
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _train_loop(model, batches, steps: int, lr: float, desc: str) -> list[float]:
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    model.train()
    bar = tqdm(range(steps), desc=desc, unit="step")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr)
        loss = model(**next(batches)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(round(float(loss.detach()), 5))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if step % 50 == 0 or step == steps - 1:
            log.info("%s step %d/%d loss %.4f", desc, step + 1, steps, losses[-1])
    model.eval()
    return losses


# -- CLIP ----------------------------------------------------------------------------------------
def _load_images(world: Path, records: list[dict], side: int):
    """uint8 tensor [N, 3, side, side]: each image resized (bicubic) to the tower's square input."""
    import numpy as np
    import torch
    from PIL import Image

    out = np.empty((len(records), 3, side, side), dtype=np.uint8)
    for i, rec in enumerate(tqdm(records, desc="load CLIP images", unit="img")):
        with Image.open(world / rec["image"]) as img:
            arr = np.asarray(img.convert("RGB").resize((side, side), Image.Resampling.BICUBIC))
        out[i] = arr.transpose(2, 0, 1)
    return torch.from_numpy(out)


def _pixels(images):
    import torch

    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def _texts(tokenizer, captions: list[str], max_len: int):
    """Token ids with the end-of-text id appended (CLIP pools the text at its first occurrence)."""
    import torch

    eos = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    rows = [tokenizer(c, add_special_tokens=False)["input_ids"][: max_len - 1] + [eos] for c in captions]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), eos, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def clip_retrieval(model, images, ids, mask) -> dict:
    """Zero-shot top-1 accuracy of matching each image to its caption among all held-out captions, and back."""
    import torch

    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, pixel_values=_pixels(images))
    logits = out.logits_per_image
    target = torch.arange(len(logits))
    return {
        "image_to_text": float((logits.argmax(1) == target).float().mean()),
        "text_to_image": float((logits.argmax(0) == target).float().mean()),
        "n": len(logits),
        "chance": 1.0 / len(logits),
    }


def pretrain_clip(world: Path, out: Path, tokenizer, steps: int, batch_size: int, lr: float, seed: int) -> dict:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPVisionModel

    tier = load_tier("tiny")
    records = read_records(world / "data/clip_pretrain.jsonl")
    n_held = min(HELD_OUT_IMAGES, max(2, len(records) // 10))
    train, held = records[:-n_held], records[-n_held:]
    side = tier["vision"]["image_size"]
    images, held_images = _load_images(world, train, side), _load_images(world, held, side)
    max_len = CLIP_TEXT["max_position_embeddings"]
    ids, mask = _texts(tokenizer, [r["caption"] for r in train], max_len)
    held_ids, held_mask = _texts(tokenizer, [r["caption"] for r in held], max_len)

    eos = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    text_config = dict(CLIP_TEXT, vocab_size=len(tokenizer), eos_token_id=eos, pad_token_id=eos, bos_token_id=eos,
                       projection_dim=tier["vision"]["projection_dim"])
    torch.manual_seed(seed)
    config = CLIPConfig(text_config=text_config, vision_config=dict(tier["vision"]),
                        projection_dim=tier["vision"]["projection_dim"])
    model = CLIPModel(config).eval()
    before = clip_retrieval(model, held_images, held_ids, held_mask)

    gen = torch.Generator().manual_seed(seed)
    bs = min(batch_size, len(train))

    def batches():
        while True:
            for idx in torch.randperm(len(train), generator=gen).split(bs):
                if len(idx) < bs:
                    continue
                m = mask[idx]
                width = int(m.sum(1).max())
                yield {"input_ids": ids[idx, :width], "attention_mask": m[:, :width],
                       "pixel_values": _pixels(images[idx]), "return_loss": True}

    t0 = time.time()
    losses = _train_loop(model, batches(), steps, lr, "pretrain CLIP")
    seconds = time.time() - t0
    after = clip_retrieval(model, held_images, held_ids, held_mask)

    vision = model.vision_model  # a CLIPVisionModel: the tower `sicog build-model --vision` loads
    if not isinstance(vision, CLIPVisionModel):
        raise TypeError(f"expected CLIPModel.vision_model to be a CLIPVisionModel, got {type(vision).__name__}")
    vision.save_pretrained(out / "clip")
    CLIPImageProcessor(
        do_resize=True, size={"shortest_edge": side}, do_center_crop=True, crop_size={"height": side, "width": side},
        do_normalize=True, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD), do_convert_rgb=True,
    ).save_pretrained(out / "clip")
    log.info("CLIP retrieval (image->text) %.3f -> %.3f on %d held-out images",
             before["image_to_text"], after["image_to_text"], after["n"])
    return {"steps": steps, "batch_size": bs, "lr": lr, "train_images": len(train), "seconds": round(seconds, 1),
            "losses": losses, "retrieval_before": before, "retrieval_after": after}


# -- LM ------------------------------------------------------------------------------------------
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


def pretrain_lm(world: Path, out: Path, tokenizer, steps: int, batch_size: int, block: int, lr: float, seed: int) -> dict:
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

    def batches():
        while True:
            for idx in torch.randperm(len(train_blocks), generator=gen).split(bs):
                if len(idx) == bs:
                    chunk = train_blocks[idx]
                    yield {"input_ids": chunk, "labels": chunk}

    t0 = time.time()
    losses = _train_loop(model, batches(), steps, lr, "pretrain LM")
    seconds = time.time() - t0
    ppl_after = perplexity(model, held_blocks)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out / "llm")
    tokenizer.save_pretrained(out / "llm")
    log.info("LM held-out perplexity %.2f -> %.2f", ppl_before, ppl_after)
    return {"steps": steps, "batch_size": bs, "block": block, "lr": lr, "train_tokens": int(train_blocks.numel()),
            "seconds": round(seconds, 1), "tokens_per_second": round(steps * bs * block / max(seconds, 1e-9), 1),
            "losses": losses, "perplexity_before": ppl_before, "perplexity_after": ppl_after}


def pretrain(world: str | Path, out: str | Path, clip_steps: int = DEFAULT_STEPS["clip"],
             lm_steps: int = DEFAULT_STEPS["lm"], clip_batch: int = 64, lm_batch: int = 8, lm_block: int = 256,
             clip_lr: float = 1e-3, lm_lr: float = 1e-3, seed: int = 0) -> dict:
    """Train and save both parts; returns the report also written to `out/pretrain_report.json`."""
    from transformers import AutoTokenizer

    world, out = Path(world), Path(out)
    for need in ("tokenizer", "data/clip_pretrain.jsonl", "data/lm_text.txt"):
        if not (world / need).exists():
            raise FileNotFoundError(f"{world / need} is missing; build the world first (`sicog world build`)")
    if clip_steps < 1 or lm_steps < 1:
        raise ValueError("--clip-steps and --lm-steps must be at least 1")
    tokenizer = AutoTokenizer.from_pretrained(str(world / "tokenizer"))
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "world": str(world),
        "seed": seed,
        "clip": pretrain_clip(world, out, tokenizer, clip_steps, clip_batch, clip_lr, seed),
        "lm": pretrain_lm(world, out, tokenizer, lm_steps, lm_batch, lm_block, lm_lr, seed),
    }
    write_json(out / "pretrain_report.json", report)
    return report


def add_arguments(parser) -> None:
    parser.add_argument("--world", required=True, help="a built world folder")
    parser.add_argument("--out", required=True, help="writes OUT/clip, OUT/llm and OUT/pretrain_report.json")
    parser.add_argument("--steps", type=int, default=None, help="steps for both parts (overridden by the two below)")
    parser.add_argument("--clip-steps", type=int, default=None, help=f"default {DEFAULT_STEPS['clip']}")
    parser.add_argument("--lm-steps", type=int, default=None, help=f"default {DEFAULT_STEPS['lm']}")
    parser.add_argument("--clip-batch", type=int, default=64)
    parser.add_argument("--lm-batch", type=int, default=8)
    parser.add_argument("--lm-block", type=int, default=256, help="tokens per LM training sequence")
    parser.add_argument("--clip-lr", type=float, default=1e-3)
    parser.add_argument("--lm-lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    clip_steps = args.clip_steps or args.steps or DEFAULT_STEPS["clip"]
    lm_steps = args.lm_steps or args.steps or DEFAULT_STEPS["lm"]
    report = pretrain(args.world, args.out, clip_steps, lm_steps, args.clip_batch, args.lm_batch, args.lm_block,
                      args.clip_lr, args.lm_lr, args.seed)
    c, m = report["clip"], report["lm"]
    print(f"CLIP: loss {c['losses'][0]:.3f} -> {c['losses'][-1]:.3f}, zero-shot image->text retrieval "
          f"{c['retrieval_before']['image_to_text']:.3f} -> {c['retrieval_after']['image_to_text']:.3f} "
          f"(n={c['retrieval_after']['n']}), {c['seconds']}s")
    print(f"LM:   loss {m['losses'][0]:.3f} -> {m['losses'][-1]:.3f}, held-out perplexity "
          f"{m['perplexity_before']:.2f} -> {m['perplexity_after']:.2f}, {m['seconds']}s")
    print(f"saved {Path(args.out) / 'clip'} and {Path(args.out) / 'llm'}")
    return 0
