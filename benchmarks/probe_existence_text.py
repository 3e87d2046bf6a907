"""Does the tiny LM learn to answer existence questions from a text context? A text-only probe.

Continues an LM folder (e.g. `RUN/pretrain/llm` of `sicog world pretrain`) on conversations about
the world's `clip` scenes: a share `--existence` of them hold single existence questions (`Is there a
red object`, `... a circle`, `... a red circle in the image?`: `questions.existence_question`, kinds
chosen in turn), the rest the instruction phase's six-question conversations; each context is the
object names or the full description, half each. It prints held-out answer accuracy (every
conversation of the last 100 `clip` scenes) per skill and context kind (`/n` names, `/d`
description) every 250 steps, and saves the LM to `OUT/llm` at the end. The README's issue-12
text-existence figures come from:

    OMP_NUM_THREADS=1 python benchmarks/probe_existence_text.py --llm RUN/pretrain/llm \
        --world RUN/world --out /tmp/exists --steps 2000 --lr 3e-4 --batch 32 --existence 0.75 \
        --questions 1 --per-scene 8

and its easy-first figures (`--kinds colour --context names --existence 1.0`: only single colour
existence questions on name lists, as `world pretrain`'s easy part) from `--eval-every 100`.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, Qwen2ForCausalLM

from sicog.data.records import read_records
from sicog.world import questions as Q
from sicog.world.conversations import perception_questions, qa_turns, scene_context
from sicog.world.pretrain_instruct import _chat_tensors, answer_hits
from sicog.world.pretrain_loop import full_batches, train_loop


def conversation(scene: dict, rng: random.Random, existence: bool, n_questions: int,
                 kinds: tuple[str, ...] = Q.EXISTENCE_KINDS, context: str = "both") -> dict:
    kind = context if context != "both" else ("names" if rng.random() < 0.5 else "description")
    if existence:
        qs = [Q.existence_question(scene, rng, k) for k in rng.sample(kinds, k=len(kinds))[:n_questions]]
    else:
        qs = perception_questions(scene, rng, n_skills=4, n_existence=2)
    return {"skills": [q["skill"] for q in qs], "context": kind,
            "conversations": qa_turns(qs, image=False, context=scene_context(scene, kind))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llm", required=True)
    ap.add_argument("--world", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--existence", type=float, default=0.75, help="share of existence conversations")
    ap.add_argument("--questions", type=int, default=1, help="existence questions per such conversation (1-3)")
    ap.add_argument("--per-scene", type=int, default=8, help="training conversations per scene")
    ap.add_argument("--kinds", default=",".join(Q.EXISTENCE_KINDS),
                    help="existence kinds of the training questions (held out: every kind)")
    ap.add_argument("--context", choices=("both", "names", "description"), default="both",
                    help="context of the training conversations (held out: both, half each)")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    kinds = tuple(a.kinds.split(","))
    if not set(kinds) <= set(Q.EXISTENCE_KINDS):
        ap.error(f"--kinds {a.kinds}: each must be one of {Q.EXISTENCE_KINDS}")
    torch.manual_seed(a.seed)
    clip = [s for s in read_records(a.world / "world.jsonl") if s["split"] == "clip"]
    rng = random.Random(a.seed + 1)
    train = [conversation(s, rng, rng.random() < a.existence, a.questions, kinds, a.context)
             for s in clip[:-100] for _ in range(a.per_scene)]
    held = ([conversation(s, rng, True, a.questions) for s in clip[-100:]]
            + [conversation(s, rng, False, a.questions) for s in clip[-100:]])
    tok = AutoTokenizer.from_pretrained(a.llm)
    model = Qwen2ForCausalLM.from_pretrained(a.llm)
    ids, mask, labels = _chat_tensors(tok, train, 512)
    held_tensors = _chat_tensors(tok, held, 512)

    def accuracy() -> dict:
        model.eval()
        cells: dict[str, list[bool]] = {}
        for rec, hits in zip(held, answer_hits(model, *held_tensors)):
            for skill, hit in zip(rec["skills"], hits):
                cells.setdefault(f"{skill}/{rec['context'][0]}", []).append(hit)
        return {k: round(sum(v) / len(v), 3) for k, v in sorted(cells.items())}

    curve = [{"step": 0, **accuracy()}]
    print(json.dumps(curve[-1]), flush=True)

    def after(step: int) -> None:
        if step % a.eval_every == 0 or step == a.steps:
            curve.append({"step": step, **accuracy()})
            print(json.dumps(curve[-1]), flush=True)

    def make(idx):
        width = int(mask[idx].sum(1).max())
        return {"input_ids": ids[idx, :width], "attention_mask": mask[idx, :width], "labels": labels[idx, :width]}

    t0 = time.time()
    batches = full_batches(len(ids), a.batch, torch.Generator().manual_seed(a.seed + 2), make)
    train_loop(model, batches, a.steps, a.lr, "existence", after_step=after)
    a.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(a.out / "llm")
    tok.save_pretrained(a.out / "llm")
    (a.out / "curve.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()},
                                                  "curve": curve, "seconds": round(time.time() - t0, 1)}))
    print(f"{time.time() - t0:.0f} s; saved {a.out / 'llm'}")


if __name__ == "__main__":
    main()
