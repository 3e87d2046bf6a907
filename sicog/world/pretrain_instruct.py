"""`sicog world pretrain`, the LM's instruction phase (`instruct_lm`) and the in-context answer
accuracy it is measured by (`answer_hits`, `hit_rate`, `accuracy_by_skill`)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from sicog.data.records import read_records
from sicog.world.pretrain_loop import full_batches, train_loop
from sicog.world.tokenizer import ENDOFTEXT

log = logging.getLogger("sicog.world.pretrain")   # one logger name for the whole command

INSTRUCT_LR = 3e-4
INSTRUCT_HELD_SCENES = 50


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

    def batch(idx):
        m = train_mask[idx]
        width = int(m.sum(1).max())
        return {"input_ids": train_ids[idx, :width], "attention_mask": m[:, :width],
                "labels": train_labels[idx, :width]}

    def after_step(step: int) -> None:
        if step % eval_every == 0 or step == steps:
            curve.append({"step": step, **accuracy()})
            log.info("LM in-context answer accuracy at step %d: %s", step, curve[-1])

    t0 = time.time()
    losses = train_loop(model, full_batches(len(train_ids), bs, gen, batch), steps, lr, "instruct LM",
                        after_step=after_step)
    # the curve's last point evaluated the final model (after_step runs at step == steps)
    by_skill = accuracy_by_skill([r for rows, _ in held.values() for r in rows],
                                 [h for kind in held for h in last_hits[kind]])
    log.info("LM in-context answer accuracy by skill after the instruction phase: %s", by_skill)
    return {"accuracy_by_skill_after": by_skill, "steps": steps, "batch_size": bs, "lr": lr, "conversations": len(train_ids),
            "held_out_conversations": {kind: len(rows) for kind, (rows, _) in held.items()},
            "seconds": round(time.time() - t0, 1), "losses": losses, "accuracy_curve": curve,
            "in_context_accuracy_before": curve[0], "in_context_accuracy_after": curve[-1]}
