"""The training loss path (logits at supervised positions only, chunked fp32 loss), the zero-weighted
vision path of text-only batches, and the tower layers that never run being frozen."""
import pytest
import torch

from model_helpers import Q, image
from tiny_models import build_random_tiny
from sicog.model.loss import supervised_lm_loss
from sicog.train.stages import freeze
from transformers.loss.loss_utils import ForCausalLMLoss

CONV = Q + [{"from": "gpt", "value": "The square is blue."}]
TEXT = [{"from": "human", "value": "What is 2 plus 3?"}, {"from": "gpt", "value": "2 plus 3 is 5."},
        {"from": "human", "value": "And 4 plus 4?"}, {"from": "gpt", "value": "8."}]


@pytest.fixture(scope="module")
def tiny():
    return build_random_tiny(seed=0)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _full_path(model, batch, num_items=None):
    """The plain loss: full logits for every position, upcast to fp32 (transformers' ForCausalLMLoss)."""
    model.eval()
    model.zero_grad()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits
    loss = ForCausalLMLoss(logits, batch["labels"], logits.shape[-1], num_items_in_batch=num_items)
    loss.backward()
    return loss.detach(), _grads(model)


def _new_path(model, batch, num_items=None):
    model.train()
    model.zero_grad()
    out = model(**batch, num_items_in_batch=num_items)
    assert out.logits is None
    out.loss.backward()
    model.eval()
    return out.loss.detach(), _grads(model)


@pytest.mark.parametrize("case", ["one", "padded", "images_and_text", "num_items"])
def test_loss_and_grads_equal_the_full_logits_path(tiny, case):
    model, proc = tiny
    items = {
        "one": [proc.encode(CONV, image(112, 112))],
        "padded": [proc.encode(CONV, image(300, 200)), proc.encode(TEXT)],
        "images_and_text": [proc.encode(CONV, image(300, 200)), proc.encode(TEXT),
                            proc.encode(CONV, image(60, 90, seed=1))],
        "num_items": [proc.encode(TEXT), proc.encode(CONV, image(150, 150, seed=2))],
    }[case]
    for side in ("right", "left"):
        batch = proc.collate(items, padding_side=side)
        num_items = torch.tensor(57) if case == "num_items" else None
        ref_loss, ref_grads = _full_path(model, batch, num_items)
        loss, grads = _new_path(model, batch, num_items)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
        assert grads.keys() == ref_grads.keys()
        for k in grads:
            torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-4, atol=1e-6, msg=k)


def test_chunks_do_not_change_the_loss():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(3, 9, 16, requires_grad=True)
    labels = torch.randint(0, 50, (3, 9))
    labels[0, :4] = -100
    labels[2, 6:] = -100
    values, grads = [], []
    for chunk in (1, 4, 1024):
        hidden.grad = None
        loss = supervised_lm_loss(hidden, labels, head, chunk_rows=chunk)
        loss.backward()
        values.append(loss.detach())
        grads.append(hidden.grad.clone())
    ref = ForCausalLMLoss(head(hidden), labels, 50)
    for v, g in zip(values, grads):
        torch.testing.assert_close(v, ref.detach())
        torch.testing.assert_close(g, grads[-1])


def test_text_only_batch_touches_the_vision_path_with_zero_weight(tiny):
    """Every trainable parameter gets a gradient (exact zeros for the vision path) on a text-only batch."""
    model, proc = tiny
    batch = proc.collate([proc.encode(TEXT)])
    calls = []
    # (the tower's `embeddings` module itself is never called: `vision_embeddings` calls its parts)
    hook = model.vision_tower.embeddings.patch_embedding.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        model(**batch)
    assert not calls  # no gradients wanted: no vision work
    ref_loss, ref_grads = _full_path(model, batch)
    loss, grads = _new_path(model, batch)
    hook.remove()
    assert len(calls) == 2  # one blank image through the tower for each forward that builds a graph
    torch.testing.assert_close(loss, ref_loss)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad} - set(model.unused_vision_parameters())
    assert trainable <= grads.keys()
    for k in grads:
        if k.startswith(("model.vision_tower.", "model.projector.")):
            assert torch.count_nonzero(grads[k]) == 0, k
        else:
            torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-4, atol=1e-6, msg=k)


def test_layers_above_the_feature_layer_are_frozen_and_out_of_the_optimizer(tiny):
    model, proc = tiny
    unused = model.unused_vision_parameters()
    # vision_feature_layer -2 of a 3-layer tower: layer 2 and post_layernorm never run
    assert {n.split(".")[4] for n in unused if ".layers." in n} == {"2"}
    assert any(n.startswith("model.vision_tower.post_layernorm.") for n in unused)
    try:
        summary = freeze(model, "stage2")
        assert summary["vision_tower"]["unused_frozen"] == sum(p.numel() for p in unused.values())
        assert not any(p.requires_grad for p in unused.values())
        # every parameter left trainable gets a gradient from an image batch (what DDP checks)
        _, grads = _new_path(model, proc.collate([proc.encode(CONV, image(200, 120))]))
        assert {n for n, p in model.named_parameters() if p.requires_grad} == grads.keys()
        from transformers import Trainer, TrainingArguments

        args = TrainingArguments(output_dir="unused", report_to="none", use_cpu=True)
        opt = Trainer(model=model, args=args).create_optimizer()
        in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
        assert not in_opt & {id(p) for p in unused.values()}
        assert in_opt == {id(p) for p in model.parameters() if p.requires_grad}
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
