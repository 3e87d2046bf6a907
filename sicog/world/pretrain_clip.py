"""`sicog world pretrain`, the CLIP part: a small CLIP (vision tower from `configs/tiers/tiny.yaml`, a
small text tower) trained with CLIP's contrastive loss plus a per-patch shape loss
(`PatchShapeLoss`) on `data/clip_pretrain.jsonl`; its vision tower saved as `OUT/clip/`
(CLIPVisionModel + CLIPImageProcessor), its zero-shot retrieval measured before and after."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from tqdm import tqdm

from sicog.data.records import read_records
from sicog.model.tiers import load_tier
from sicog.world.pretrain_loop import full_batches, train_loop
from sicog.world.tokenizer import ENDOFTEXT
from sicog.world.vocab import SHAPES

log = logging.getLogger("sicog.world.pretrain")   # one logger name for the whole command

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)   # the statistics CLIP image processors use
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_TEXT = dict(hidden_size=96, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=64)
HELD_OUT_IMAGES = 64


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

    def batch(idx):
        m = mask[idx]
        width = int(m.sum(1).max())
        out = {"input_ids": ids[idx, :width], "attention_mask": m[:, :width],
               "pixel_values": _pixels(images[idx])}
        if labels is not None:
            out["patch_labels"] = labels[idx]
        return out

    t0 = time.time()
    losses = train_loop(model, full_batches(len(train), bs, gen, batch), steps, lr, "pretrain CLIP", loss_fn,
                        extra=loss_fn.head)
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
