"""Bad training records: each is dropped with a reason in the rejects file, never truncated or replaced."""
import io
import json

import pytest
import torch
from PIL import Image

from sicog.data.collator import TrainCollator
from sicog.data.dataset import RejectLog, SupervisedDataset, prepare_samples
from sicog.data.mixture import DataEntry


@pytest.fixture(scope="module")
def tiny():
    from tiny_models import build_random_tiny

    model, processor = build_random_tiny(seed=0)
    return model, processor


def _record(rid, image=None, answer="A red square."):
    human = ("<image>\n" if image else "") + "Describe the image."
    rec = {"id": rid, "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]}
    if image:
        rec["image"] = image
    return rec


def _png_bytes(size, colour="red"):
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_records_are_dropped_with_reasons(tmp_path, tiny):
    model, processor = tiny
    (tmp_path / "ok.png").write_bytes(_png_bytes((112, 112)))
    (tmp_path / "tiny.png").write_bytes(_png_bytes((1, 1)))
    (tmp_path / "thin.png").write_bytes(_png_bytes((1, 4000)))
    (tmp_path / "garbage.png").write_bytes(b"this is not an image at all")
    good_png = _png_bytes((112, 112), "blue")
    (tmp_path / "truncated.png").write_bytes(good_png[: len(good_png) // 2])  # header fine, pixels cut
    records = [
        _record("ok", "ok.png"),
        _record("one-pixel", "tiny.png"),
        _record("one-by-4000", "thin.png"),
        _record("text-only"),
        _record("too-long", "ok.png", answer="word " * 2000),
        _record("missing", "nowhere.png"),
        _record("corrupt", "garbage.png"),
        {"id": "no-conv", "image": "ok.png"},
        {"id": "no-answer", "conversations": [{"from": "human", "value": "Hello?"}]},
        _record("tag-without-image", answer="x") | {"conversations": [
            {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "x"}]},
        _record("truncated", "truncated.png"),
    ]
    entries = [DataEntry(r, tmp_path, "data.jsonl", i) for i, r in enumerate(records)]
    rejects = RejectLog(tmp_path / "out" / "rejects.jsonl")
    samples = prepare_samples(entries, processor, model_max_length=512, rejects=rejects, progress=False)

    assert [s.id for s in samples] == ["ok", "one-pixel", "one-by-4000", "text-only", "truncated"]
    lines = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    reasons = {x["id"]: x["reason"] for x in lines}
    assert reasons["too-long"].startswith("too long:") and "> model_max_length 512" in reasons["too-long"]
    assert reasons["missing"].startswith("missing image:")
    assert reasons["corrupt"].startswith("corrupt image:")
    assert reasons["no-conv"].startswith("no conversations:")
    assert reasons["no-answer"].startswith("no conversations:")
    assert reasons["tag-without-image"].startswith("unencodable:")
    assert set(reasons) == {"too-long", "missing", "corrupt", "no-conv", "no-answer", "tag-without-image"}
    assert all(x["phase"] == "prepare" and x["source"] == "data.jsonl" for x in lines)
    assert rejects.counts["too long"] == 1 and rejects.counts["missing image"] == 1

    # lengths are measured after image expansion and agree with the encoded length
    ds = SupervisedDataset(samples, processor, rejects)
    for i, s in enumerate(samples[:4]):
        item = ds[i]
        assert len(item["input_ids"]) == s.length

    # the truncated image fails only when decoded: None, recorded, and left out of the batch
    assert ds[4] is None
    last = json.loads((tmp_path / "out" / "rejects.jsonl").read_text().splitlines()[-1])
    assert last["id"] == "truncated" and last["phase"] == "load" and last["reason"].startswith("load failed:")

    collate = TrainCollator(processor)
    batch = collate([ds[0], ds[4], ds[1]])
    assert batch["input_ids"].shape[0] == 2 and len(batch["images"]) == 2
    model.train()
    out = model(**batch)
    assert torch.isfinite(out.loss)
    thin = collate([ds[2], ds[3]])  # extreme aspect ratio and text-only together still run
    assert torch.isfinite(model(**thin).loss)
    empty = collate([None, None])
    assert empty["input_ids"].numel() == 0 and empty["images"] == []


def test_empty_batch_gives_zero_loss_through_the_model(tiny):
    from sicog.train.trainer import _zero_through_trainable

    model, _ = tiny
    model.train()
    model.zero_grad(set_to_none=True)
    zero = _zero_through_trainable(model)
    assert zero.item() == 0.0 and zero.requires_grad
    zero.backward()
    grads = [p.grad for p in model.language_model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.count_nonzero(g) == 0 for g in grads)
    model.zero_grad(set_to_none=True)
