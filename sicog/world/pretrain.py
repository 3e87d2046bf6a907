"""`sicog world pretrain`: the tiny tier's unimodal parts, trained on the world.

The paper starts from a pretrained CLIP and a pretrained -Instruct LLM; the tiny tier starts from these:

- a small CLIP (vision tower from `configs/tiers/tiny.yaml`, a small text tower) trained with CLIP's
  contrastive loss on `data/clip_pretrain.jsonl`, plus a per-patch shape loss on the layer the VLM
  reads (`PatchShapeLoss`: what web-scale pre-training gives a real CLIP and this world's
  contrastive batches do not), its vision tower saved as `OUT/clip/` (CLIPVisionModel +
  CLIPImageProcessor);
- a small Qwen2ForCausalLM (text config from the tier, vocabulary from the world's tokenizer) trained
  on `data/lm_text.txt`, then instruction-tuned on `data/lm_chat.jsonl` (questions answered from a
  description in the context, loss on the answers: `instruct_lm`), saved with the tokenizer as
  `OUT/llm/`.

`OUT/pretrain_report.json` holds the losses, the CLIP's zero-shot image-text retrieval accuracy on
held-out images, the LM's held-out perplexity and its in-context answer accuracy, each before and
after training.
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
from sicog.world.vocab import SHAPES

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)   # the statistics CLIP image processors use
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_TEXT = dict(hidden_size=96, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=64)
DEFAULT_STEPS = {"clip": 300, "lm": 300, "instruct": 2000}
INSTRUCT_LR = 3e-4
HELD_OUT_IMAGES = 64
HELD_OUT_DOCS = 0.05
INSTRUCT_HELD_SCENES = 50


def _lr_at(step: int, steps: int, lr: float) -> float:
    warmup = max(1, min(20, steps // 10))
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _train_loop(model, batches, steps: int, lr: float, desc: str, loss_fn=None, extra=None,
                after_step=None) -> list[float]:
    """AdamW with warm-up and cosine decay; `loss_fn(model, batch)` (default: the model's own loss)
    and the parameters of `extra`, a module trained alongside (e.g. an auxiliary head).
    `after_step(step)` (1-based) runs after each optimiser step, e.g. a held-out evaluation."""
    import torch

    params = list(model.parameters()) + (list(extra.parameters()) if extra is not None else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    losses = []
    model.train()
    bar = tqdm(range(steps), desc=desc, unit="step")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr)
        batch = next(batches)
        loss = loss_fn(model, batch) if loss_fn is not None else model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(round(float(loss.detach()), 5))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if step % 50 == 0 or step == steps - 1:
            log.info("%s step %d/%d loss %.4f", desc, step + 1, steps, losses[-1])
        if after_step is not None:
            after_step(step + 1)
            model.train()
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


def patch_labels(world: Path, records: list[dict], side: int, patch: int):
    """[N, (side/patch)^2] class of each patch of the square-resized image: 0 for background, else
    1 + the index in SHAPES of the object under the patch centre (from the scene graph beside the image)."""
    import json

    import torch
    from PIL import Image, ImageDraw

    from sicog.world.render import draw_shape

    cells = side // patch
    out = torch.zeros(len(records), cells * cells, dtype=torch.long)
    for i, rec in enumerate(records):
        scene = json.loads((world / rec["image"]).with_suffix(".json").read_text())
        mask = Image.new("L", (scene["width"], scene["height"]), 0)
        draw = ImageDraw.Draw(mask)
        for obj in scene["objects"]:
            draw_shape(draw, obj, 1 + SHAPES.index(obj["shape"]))
        for r in range(cells):
            for c in range(cells):
                x = min(scene["width"] - 1, int((c + 0.5) * patch * scene["width"] / side))
                y = min(scene["height"] - 1, int((r + 0.5) * patch * scene["height"] / side))
                out[i, r * cells + c] = mask.getpixel((x, y))
    return out


class PatchShapeLoss:
    """CLIP's contrastive loss plus a per-patch shape loss on the tower's feature layer.

    In the mini world the background and the set of colours tell the images of a batch apart, so
    CLIP's loss alone leaves the tower blind to shape (a linear probe finds shape no better than in
    a random tower; shape-swapped hard-negative captions did not change that). A linear head on the
    patch tokens of the layer the VLM reads (`vision_feature_layer`) predicts, for every patch, the
    shape of the object under it: a stand-in for what web-scale pre-training gives a real CLIP. The
    head is discarded; only the tower is saved. Stages 1 to 2 never see these labels.
    """

    def __init__(self, hidden: int, feature_layer: int, weight: float):
        import torch

        self.head = torch.nn.Linear(hidden, 1 + len(SHAPES))
        self.feature_layer, self.weight = feature_layer, weight

    def __call__(self, model, batch):
        import torch
        import torch.nn.functional as F

        vision = model.vision_model(pixel_values=batch["pixel_values"], output_hidden_states=True)
        text = model.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        img = F.normalize(model.visual_projection(vision.pooler_output), dim=-1)
        txt = F.normalize(model.text_projection(text.pooler_output), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.t()
        target = torch.arange(len(logits), device=logits.device)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
        if self.weight:
            patches = vision.hidden_states[self.feature_layer][:, 1:]
            shape_logits = self.head(patches)
            loss = loss + self.weight * F.cross_entropy(shape_logits.flatten(0, 1), batch["patch_labels"].flatten())
        return loss


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


def pretrain_clip(world: Path, out: Path, tokenizer, steps: int, batch_size: int, lr: float, seed: int,
                  shape_loss: float = 1.0) -> dict:
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
    loss_fn = PatchShapeLoss(tier["vision"]["hidden_size"], tier["model"]["vision_feature_layer"], shape_loss)
    labels = patch_labels(world, train, side, tier["vision"]["patch_size"]) if shape_loss else None

    def batches():
        while True:
            for idx in torch.randperm(len(train), generator=gen).split(bs):
                if len(idx) < bs:
                    continue
                m = mask[idx]
                width = int(m.sum(1).max())
                batch = {"input_ids": ids[idx, :width], "attention_mask": m[:, :width], "pixel_values": _pixels(images[idx])}
                if labels is not None:
                    batch["patch_labels"] = labels[idx]
                yield batch

    t0 = time.time()
    losses = _train_loop(model, batches(), steps, lr, "pretrain CLIP", loss_fn, extra=loss_fn.head)
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
    return {"steps": steps, "batch_size": bs, "lr": lr, "shape_loss": shape_loss,
            "train_images": len(train), "seconds": round(seconds, 1),
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


def pretrain_lm(world: Path, out: Path, tokenizer, steps: int, batch_size: int, block: int, lr: float, seed: int,
                instruct_steps: int = 0, instruct_batch: int = 16, instruct_lr: float = INSTRUCT_LR) -> dict:
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
    instruct = (instruct_lm(world, model, tokenizer, instruct_steps, instruct_batch, instruct_lr, seed)
                if instruct_steps else None)
    model.eval()
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out / "llm")
    tokenizer.save_pretrained(out / "llm")
    log.info("LM held-out perplexity %.2f -> %.2f", ppl_before, ppl_after)
    return {"steps": steps, "batch_size": bs, "block": block, "lr": lr, "train_tokens": int(train_blocks.numel()),
            "seconds": round(seconds, 1), "tokens_per_second": round(steps * bs * block / max(seconds, 1e-9), 1),
            "losses": losses, "perplexity_before": ppl_before, "perplexity_after": ppl_after, "instruct": instruct}


def _chat_tensors(tokenizer, records: list[dict], max_len: int):
    """Padded ids and answer-only labels of text-only conversations (the VLM's chat template)."""
    import torch

    from sicog.data.template import IGNORE_INDEX, encode_chat

    rows = [encode_chat(tokenizer, r["conversations"], "assistant") for r in records]
    rows = [(ids[:max_len], labels[:max_len]) for ids, labels in rows]
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (a, b) in enumerate(rows):
        ids[i, : len(a)], labels[i, : len(b)], mask[i, : len(a)] = torch.tensor(a), torch.tensor(b), 1
    return ids, mask, labels


def answer_hits(model, ids, mask, labels, batch_size: int = 16) -> list[list[bool]]:
    """Per conversation, per answer (a run of supervised tokens): whether every token is the model's argmax."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            sl = slice(start, start + batch_size)
            logits = model(input_ids=ids[sl], attention_mask=mask[sl]).logits[:, :-1]
            target = labels[sl, 1:]
            hit = logits.argmax(-1) == target
            for row_hit, row_target in zip(hit, target):
                supervised = row_target >= 0
                # an answer starts at a supervised position whose predecessor is not supervised
                starts = supervised & ~torch.cat([supervised.new_zeros(1), supervised[:-1]])
                answer = starts.cumsum(0)
                out.append([bool(row_hit[supervised & (answer == k)].all())
                            for k in range(1, int(answer.max()) + 1)])   # none when nothing is supervised
    return out


def hit_rate(hits: list[list[bool]]) -> float:
    """Fraction of the answers of `answer_hits` that are right."""
    flat = [h for row in hits for h in row]
    return sum(flat) / max(len(flat), 1)


def in_context_accuracy(model, ids, mask, labels, batch_size: int = 16) -> float:
    """Fraction of answers whose every token is the model's argmax."""
    return hit_rate(answer_hits(model, ids, mask, labels, batch_size))


def accuracy_by_skill(records: list[dict], hits: list[list[bool]]) -> dict[str, float]:
    """Answer accuracy per question skill (`records[i]["skills"]`, one per answer), from `answer_hits`."""
    right: dict[str, list[bool]] = {}
    for rec, hits in zip(records, hits):
        for skill, hit in zip(rec.get("skills") or [], hits):
            right.setdefault(skill, []).append(hit)
    return {skill: round(sum(h) / len(h), 4) for skill, h in sorted(right.items())}


def instruct_lm(world: Path, model, tokenizer, steps: int, batch_size: int, lr: float, seed: int,
                eval_every: int = 250) -> dict:
    """The instruction phase: questions answered from a scene in the context, loss on the answers.

    Plain LM training on the world's text leaves the tiny LM unable to look up an attribute in its
    context (it answers existence questions about a description at chance): the answers are a
    sliver of its loss. A real -Instruct LLM arrives with that skill, and a VLM reuses it once its
    image tokens read like a description; this phase gives it to the tiny LM. The skill appears
    late and only at a moderate rate (at 1e-3 it never did; `benchmarks/probe_lookup_text.py`), so
    held-out accuracy is recorded every `eval_every` steps, for name-list and description contexts
    apart. Held out: every conversation of the last `INSTRUCT_HELD_SCENES` scenes.
    """
    import torch

    records = read_records(world / "data/lm_chat.jsonl")
    scene_of = [r["id"].rsplit("-chat", 1)[0] for r in records]
    scenes = list(dict.fromkeys(scene_of))
    held_scenes = set(scenes[-min(INSTRUCT_HELD_SCENES, max(1, len(scenes) // 10)):])
    is_held = [scene in held_scenes for scene in scene_of]
    train_ids, train_mask, train_labels = _chat_tensors(tokenizer, [r for r, h in zip(records, is_held) if not h], 512)
    held_records = [r for r, h in zip(records, is_held) if h]
    held = {kind: (rows, _chat_tensors(tokenizer, rows, 512)) for kind in ("names", "description")
            if (rows := [r for r in held_records if r.get("context", "description") == kind])}
    last_hits: dict[str, list[list[bool]]] = {}   # of the latest evaluation: the by-skill figures reuse them

    def accuracy() -> dict:
        point = {}
        for kind, (_, tensors) in held.items():
            last_hits[kind] = answer_hits(model, *tensors)
            point[kind] = round(hit_rate(last_hits[kind]), 4)
        return point

    curve = [{"step": 0, **accuracy()}]
    gen = torch.Generator().manual_seed(seed + 2)
    bs = min(batch_size, len(train_ids))

    def batches():
        while True:
            for idx in torch.randperm(len(train_ids), generator=gen).split(bs):
                if len(idx) == bs:
                    m = train_mask[idx]
                    width = int(m.sum(1).max())
                    yield {"input_ids": train_ids[idx, :width], "attention_mask": m[:, :width],
                           "labels": train_labels[idx, :width]}

    def after_step(step: int) -> None:
        if step % eval_every == 0 or step == steps:
            curve.append({"step": step, **accuracy()})
            log.info("LM in-context answer accuracy at step %d: %s", step, curve[-1])

    t0 = time.time()
    losses = _train_loop(model, batches(), steps, lr, "instruct LM", after_step=after_step)
    # the curve's last point evaluated the final model (after_step runs at step == steps)
    by_skill = accuracy_by_skill([r for rows, _ in held.values() for r in rows],
                                 [h for kind in held for h in last_hits[kind]])
    log.info("LM in-context answer accuracy by skill after the instruction phase: %s", by_skill)
    return {"accuracy_by_skill_after": by_skill, "steps": steps, "batch_size": bs, "lr": lr, "conversations": len(train_ids),
            "held_out_conversations": {kind: len(rows) for kind, (rows, _) in held.items()},
            "seconds": round(time.time() - t0, 1), "losses": losses, "accuracy_curve": curve,
            "in_context_accuracy_before": curve[0], "in_context_accuracy_after": curve[-1]}


def pretrain(world: str | Path, out: str | Path, clip_steps: int = DEFAULT_STEPS["clip"],
             lm_steps: int = DEFAULT_STEPS["lm"], clip_batch: int = 64, lm_batch: int = 8, lm_block: int = 256,
             clip_lr: float = 1e-3, lm_lr: float = 1e-3, seed: int = 0, shape_loss: float = 1.0,
             instruct_steps: int = DEFAULT_STEPS["instruct"], instruct_batch: int = 16,
             instruct_lr: float = INSTRUCT_LR) -> dict:
    """Train and save both parts; returns the report also written to `out/pretrain_report.json`."""
    from transformers import AutoTokenizer

    world, out = Path(world), Path(out)
    for need in ("tokenizer", "data/clip_pretrain.jsonl", "data/lm_text.txt") + (("data/lm_chat.jsonl",) if instruct_steps else ()):
        if not (world / need).exists():
            raise FileNotFoundError(f"{world / need} is missing; build the world first (`sicog world build`)")
    if clip_steps < 1 or lm_steps < 1 or instruct_steps < 0:
        raise ValueError("--clip-steps and --lm-steps must be at least 1, --instruct-steps at least 0")
    tokenizer = AutoTokenizer.from_pretrained(str(world / "tokenizer"))
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "world": str(world),
        "seed": seed,
        "clip": pretrain_clip(world, out, tokenizer, clip_steps, clip_batch, clip_lr, seed, shape_loss),
        "lm": pretrain_lm(world, out, tokenizer, lm_steps, lm_batch, lm_block, lm_lr, seed, instruct_steps,
                          instruct_batch, instruct_lr),
    }
    write_json(out / "pretrain_report.json", report)
    return report


def add_arguments(parser) -> None:
    parser.add_argument("--world", required=True, help="a built world folder")
    parser.add_argument("--out", required=True, help="writes OUT/clip, OUT/llm and OUT/pretrain_report.json")
    parser.add_argument("--steps", type=int, default=None, help="steps for both parts (overridden by the two below)")
    parser.add_argument("--clip-steps", type=int, default=None, help=f"default {DEFAULT_STEPS['clip']}")
    parser.add_argument("--lm-steps", type=int, default=None, help=f"default {DEFAULT_STEPS['lm']}")
    parser.add_argument("--instruct-steps", type=int, default=None,
                        help=f"the LM's instruction phase on data/lm_chat.jsonl (0: none); default {DEFAULT_STEPS['instruct']}")
    parser.add_argument("--instruct-batch", type=int, default=16)
    parser.add_argument("--instruct-lr", type=float, default=INSTRUCT_LR,
                        help="peak rate of the instruction phase (at 1e-3 the tiny LM never learns to look up its context)")
    parser.add_argument("--clip-batch", type=int, default=64)
    parser.add_argument("--lm-batch", type=int, default=8)
    parser.add_argument("--lm-block", type=int, default=256, help="tokens per LM training sequence")
    parser.add_argument("--clip-lr", type=float, default=1e-3)
    parser.add_argument("--lm-lr", type=float, default=1e-3)
    parser.add_argument("--shape-loss", type=float, default=1.0,
                        help="weight of the per-patch shape loss beside CLIP's (0: CLIP's loss alone)")
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    clip_steps = args.clip_steps or args.steps or DEFAULT_STEPS["clip"]
    lm_steps = args.lm_steps or args.steps or DEFAULT_STEPS["lm"]
    instruct_steps = args.instruct_steps if args.instruct_steps is not None else (args.steps or DEFAULT_STEPS["instruct"])
    report = pretrain(args.world, args.out, clip_steps, lm_steps, args.clip_batch, args.lm_batch, args.lm_block,
                      args.clip_lr, args.lm_lr, args.seed, args.shape_loss, instruct_steps, args.instruct_batch,
                      args.instruct_lr)
    c, m = report["clip"], report["lm"]
    print(f"CLIP: loss {c['losses'][0]:.3f} -> {c['losses'][-1]:.3f}, zero-shot image->text retrieval "
          f"{c['retrieval_before']['image_to_text']:.3f} -> {c['retrieval_after']['image_to_text']:.3f} "
          f"(n={c['retrieval_after']['n']}), {c['seconds']}s")
    print(f"LM:   loss {m['losses'][0]:.3f} -> {m['losses'][-1]:.3f}, held-out perplexity "
          f"{m['perplexity_before']:.2f} -> {m['perplexity_after']:.2f}, {m['seconds']}s")
    if m["instruct"]:
        i = m["instruct"]
        before, after = i["in_context_accuracy_before"], i["in_context_accuracy_after"]
        shown = ", ".join(f"{kind} {before[kind]:.3f} -> {after[kind]:.3f}" for kind in before if kind != "step")
        print(f"LM instruction phase: {i['steps']} steps at lr {i['lr']:g}, held-out answers looked up in the context: "
              f"{shown}, {i['seconds']}s")
    print(f"saved {Path(args.out) / 'clip'} and {Path(args.out) / 'llm'}")
    return 0
