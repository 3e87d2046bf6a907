"""DPO training on a random tiny model: the completion mask, a frozen reference, precomputed
reference log-probs, and an end-to-end `sicog train --stage dpo` run whose margin grows."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from dpo_helpers import PROMPT, good_pairs, read_jsonl, write_pairs
from sicog.data.template import IGNORE_INDEX, IM_END
from sicog.train.dpo_data import PreferenceCollator, PreferenceDataset, conversation, prepare_pairs
from train_fixtures import save_tiny_model, train


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest on a shared machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    from tiny_models import build_random_tiny

    return build_random_tiny(seed=0)


def test_completion_mask_is_the_answer_and_its_end_token_with_the_sft_image_layout(tiny, tmp_path):
    model, processor = tiny
    pairs = good_pairs(tmp_path, 2)
    checked, _ = prepare_pairs(write_pairs(tmp_path / "pairs.jsonl", pairs), None, processor, 1024)
    dataset = PreferenceDataset(checked, processor)
    for k, pair in enumerate(pairs):
        item = dataset[k]
        image = processor.load_image(tmp_path / pair["image"])
        sft = processor.encode(conversation(PROMPT, pair["chosen"]), image=image)
        # Same ids and image (overview, slices, grid) as the SFT encoding of the same conversation.
        assert torch.equal(item["chosen"]["input_ids"], sft["input_ids"])
        assert item["chosen"]["images"].grid == sft["images"].grid
        assert torch.equal(item["chosen"]["images"].overview, sft["images"].overview)
        for side in ("chosen", "rejected"):
            labels = item[side]["labels"]
            kept = labels[labels != IGNORE_INDEX]
            assert processor.tokenizer.decode(kept) == pair[side] + IM_END
            # Everything before the answer (system, prompt, image positions, header) is masked.
            first = int((labels != IGNORE_INDEX).nonzero()[0])
            assert (item[side]["input_ids"][:first] == processor.image_token_id).sum() > 0
            assert (labels[first:-1] != IGNORE_INDEX).all() and labels[-1] == IGNORE_INDEX  # the final "\n"
    assert item["chosen"]["images"].grid is not None  # the second image is sliced
    # The batch holds the chosen sides first, then the rejected ones, with one image entry each.
    batch = PreferenceCollator(dataset.processor)([dataset[0], None, dataset[1]])
    assert batch["input_ids"].shape[0] == 4 and len(batch["images"]) == 4
    assert torch.equal(batch["input_ids"][1, :len(dataset[1]["chosen"]["input_ids"])], dataset[1]["chosen"]["input_ids"])
    assert torch.equal(batch["input_ids"][3, :len(dataset[1]["rejected"]["input_ids"])],
                       dataset[1]["rejected"]["input_ids"])
    assert processor.mask_mode == "authors"  # the SFT processor itself is left as it was


def _trainer(model, processor, dataset, out, ref_model, steps):
    from transformers import TrainingArguments

    from sicog.train.config import TrainConfig
    from sicog.train.dpo import DpoTrainer
    from sicog.train.stages import freeze, get_stage

    stage = get_stage("dpo")
    freeze(model, stage)
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=2, max_steps=steps, learning_rate=1e-3,
                             lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to="none",
                             remove_unused_columns=False, use_cpu=True, seed=0, dataloader_num_workers=0)
    cfg = TrainConfig(stage="dpo", model_name_or_path="tiny", data_path="pairs.jsonl", training={"output_dir": str(out)})
    return DpoTrainer(model=model, args=args, train_dataset=dataset, data_collator=PreferenceCollator(dataset.processor),
                      processing_class=processor, run_config=cfg, stage=stage, flops_per_token=1.0, peak_flops=None,
                      ref_model=ref_model, beta=0.1, sft_weight=1.0)


def test_reference_stays_frozen_and_precomputed_reference_gives_the_same_loss(tmp_path):
    from tiny_models import build_random_tiny
    from sicog.train.dpo import precompute_reference_logps

    model, processor = build_random_tiny(seed=1)
    pairs, _ = prepare_pairs(write_pairs(tmp_path / "pairs.jsonl", good_pairs(tmp_path, 4)), None, processor, 1024)
    dataset = PreferenceDataset(pairs, processor)
    ref = copy.deepcopy(model)
    before_ref = {k: v.clone() for k, v in ref.state_dict().items()}
    before_policy = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = _trainer(model, processor, dataset, tmp_path / "out", ref, steps=3)
    trainer.train()

    assert trainer.ref_model is ref and not ref.training
    for name, p in ref.named_parameters():
        assert not p.requires_grad and p.grad is None, name
    assert all(torch.equal(v, before_ref[k]) for k, v in ref.state_dict().items())
    assert not all(torch.equal(v, before_policy[k]) for k, v in model.state_dict().items())

    # Same batch, live reference versus precomputed reference log-probs: the same loss.
    collator = PreferenceCollator(dataset.processor)
    values = precompute_reference_logps(ref, dataset, collator, batch_size=3, device="cpu", progress=False)
    assert all(v is not None for v in values)
    live_batch = collator([dataset[0], dataset[1]])
    dataset.set_reference_logps(values)
    pre_batch = collator([dataset[0], dataset[1]])
    assert pre_batch["ref_logps"].shape == (2, 2)
    model.eval()
    with torch.no_grad():
        live = trainer.compute_loss(model, live_batch)
        trainer.ref_model = None
        pre = trainer.compute_loss(model, pre_batch)
    torch.testing.assert_close(live, pre)
    assert live.item() > 0


def test_sicog_train_dpo_margin_grows_and_bad_pairs_are_rejected(tmp_path):
    save_tiny_model(tmp_path / "model", seed=2)
    pairs = good_pairs(tmp_path, 4)
    (tmp_path / "img" / "corrupt.png").write_bytes(b"not an image at all")
    png = (tmp_path / "img" / "0.png").read_bytes()
    (tmp_path / "img" / "truncated.png").write_bytes(png[: len(png) // 2])
    bad = [
        {**pairs[0], "id": "same", "rejected": pairs[0]["chosen"]},
        {**pairs[0], "id": "noimage-token", "prompt": "What colour is the square?"},
        {**pairs[0], "id": "missing", "image": "img/nowhere.png"},
        {**pairs[0], "id": "corrupt", "image": "img/corrupt.png"},
        {**pairs[0], "id": "truncated", "image": "img/truncated.png"},
        {**pairs[0], "id": "long", "chosen": "The square is red. " * 60},
        {**pairs[1]},  # a repeated id
        "{this line is not JSON",
    ]
    data = write_pairs(tmp_path / "pairs.jsonl", pairs[:2] + bad + pairs[2:])
    out = tmp_path / "out"
    rc = train("--stage", "dpo", "--profile", "tiny", "--model_name_or_path", str(tmp_path / "model"),
               "--data_path", str(data), "--output_dir", str(out), "--model_max_length", "160",
               "--global_batch_size", "5", "--per_device_train_batch_size", "5", "--num_train_epochs", "24",
               "--learning_rate", "2e-3", "--warmup_ratio", "0", "--lr_scheduler_type", "constant",
               "--peak_tflops", "1", "--save_strategy", "no")
    assert rc == 0

    log = [x for x in read_jsonl(out / "train_log.jsonl") if "loss" in x]
    assert len(log) == 24
    for line in log:
        for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "dpo_loss",
                    "sft_loss", "tokens_per_s"):
            assert key in line, key
    # Step 1: the policy is the reference, so every reward is zero and the DPO loss is log 2.
    assert log[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert log[0]["dpo_loss"] == pytest.approx(0.693147, abs=1e-5)
    last = log[-4:]
    assert min(x["rewards/margins"] for x in last) > 0.05
    assert all(x["rewards/accuracies"] == 1.0 for x in last)
    assert all(x["rewards/chosen"] > x["rewards/rejected"] for x in last)
    assert max(x["dpo_loss"] for x in last) < 0.69
    assert log[-1]["sft_loss"] < log[0]["sft_loss"]

    rejects = {r["id"]: r for r in read_jsonl(out / "rejects.jsonl")}
    assert "same text" in rejects["same"]["reason"]
    assert "0 <image> tokens" in rejects["noimage-token"]["reason"]
    assert rejects["missing"]["reason"].startswith("missing image")
    assert rejects["corrupt"]["reason"].startswith("corrupt image")
    assert rejects["long"]["reason"].startswith("too long")
    assert rejects["p1"]["reason"].startswith("duplicate id")
    assert "malformed JSON" in rejects["line 10"]["reason"]
    # The truncated PNG's header reads; its pixels fail when its batch is built, recorded once.
    assert rejects["truncated"]["phase"] == "load" and rejects["truncated"]["reason"].startswith("load failed")
    assert len(read_jsonl(out / "rejects.jsonl")) == len(rejects) == 8
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["stage"] == "dpo" and summary["pairs"] == 5 and summary["records"] == 12
    # The trained model loads back as a SICOG model.
    from sicog.model import SicogForConditionalGeneration

    assert isinstance(SicogForConditionalGeneration.from_pretrained(out), SicogForConditionalGeneration)


def test_pair_without_precomputed_reference_is_skipped_and_recorded(tiny, tmp_path):
    from sicog.data.dataset import RejectLog

    _, processor = tiny
    checked, _ = prepare_pairs(write_pairs(tmp_path / "pairs.jsonl", good_pairs(tmp_path, 2)), None, processor, 1024)
    dataset = PreferenceDataset(checked, processor, RejectLog(tmp_path / "rejects.jsonl"))
    with pytest.raises(ValueError, match="1 reference values for 2 pairs"):
        dataset.set_reference_logps([(-1.0, -2.0)])
    dataset.set_reference_logps([(-1.0, -2.0), None])
    assert dataset[0]["ref_logps"].tolist() == [-1.0, -2.0]
    assert dataset[1] is None and dataset[1] is None
    assert [(r["id"], r["reason"]) for r in read_jsonl(tmp_path / "rejects.jsonl")] == [
        ("p1", "load failed: no precomputed reference log-probs")]


def test_text_only_pairs_batch_with_image_pairs(tiny, tmp_path):
    from sicog.train.dpo import completion_logps

    model, processor = tiny
    text_only = {"id": "t", "prompt": "What is two plus two?", "chosen": "Four.", "rejected": "Five."}
    records = good_pairs(tmp_path, 1) + [text_only]
    checked, _ = prepare_pairs(write_pairs(tmp_path / "pairs.jsonl", records), None, processor, 1024)
    dataset = PreferenceDataset(checked, processor)
    assert dataset.has_image == [True, False]
    batch = PreferenceCollator(dataset.processor)([dataset[0], dataset[1]])
    assert [im is None for im in batch["images"]] == [False, True, False, True]
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       images=batch["images"]).logits
    logps, counts = completion_logps(logits, batch["labels"])
    assert torch.isfinite(logps).all() and (logps < 0).all()
    # Each side counts its answer tokens plus the closing <|im_end|>.
    tok = processor.tokenizer
    assert counts[1].item() == len(tok.encode("Four.", add_special_tokens=False)) + 1
    assert counts[3].item() == len(tok.encode("Five.", add_special_tokens=False)) + 1
