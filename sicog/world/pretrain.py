"""`sicog world pretrain`: the tiny tier's unimodal parts, trained on the world.

The paper starts from a pretrained CLIP and a pretrained -Instruct LLM; the tiny tier starts from these:

- a small CLIP (vision tower from `configs/tiers/tiny.yaml`, a small text tower) trained with CLIP's
  contrastive loss on `data/clip_pretrain.jsonl`, plus a per-patch shape loss on the layer the VLM
  reads (`PatchShapeLoss`: what web-scale pre-training gives a real CLIP and this world's
  contrastive batches do not), its vision tower saved as `OUT/clip/` (CLIPVisionModel +
  CLIPImageProcessor);
- a small Qwen2ForCausalLM (text config from the tier, vocabulary from the world's tokenizer) trained
  on `data/lm_text.txt`, then instruction-tuned on `data/lm_chat.jsonl` (questions answered from a
  description in the context, loss on the answers; then an easy part and a focus part whose batches
  are mostly one existence question right after its context: `instruct_lm`), saved with the tokenizer as
  `OUT/llm/`.

The parts live in `pretrain_clip`, `pretrain_lm` and `pretrain_instruct` (the LM's instruction
phase), sharing the optimiser loop of `pretrain_loop`; this module holds the command.

`OUT/pretrain_report.json` holds the losses, the CLIP's zero-shot image-text retrieval accuracy on
held-out images, the LM's held-out perplexity and its in-context answer accuracy, each before and
after training.
"""
from __future__ import annotations

from pathlib import Path

from sicog.data.records import read_records, write_json
from sicog.world.pretrain_clip import pretrain_clip
from sicog.world.pretrain_instruct import InstructPlan, check_focus_data
from sicog.world.pretrain_lm import pretrain_lm

DEFAULT_STEPS = {"clip": 300, "lm": 300, "instruct": InstructPlan.steps, "easy": InstructPlan.easy_steps,
                 "focus": InstructPlan.focus_steps}


def pretrain(world: str | Path, out: str | Path, clip_steps: int = DEFAULT_STEPS["clip"],
             lm_steps: int = DEFAULT_STEPS["lm"], clip_batch: int = 64, lm_batch: int = 8, lm_block: int = 256,
             clip_lr: float = 1e-3, lm_lr: float = 1e-3, seed: int = 0, shape_loss: float = 1.0,
             instruct: InstructPlan = InstructPlan()) -> dict:
    """Train and save both parts; returns the report also written to `out/pretrain_report.json`."""
    from transformers import AutoTokenizer

    world, out = Path(world), Path(out)
    for need in ("tokenizer", "data/clip_pretrain.jsonl", "data/lm_text.txt") + (("data/lm_chat.jsonl",) if instruct.total_steps else ()):
        if not (world / need).exists():
            raise FileNotFoundError(f"{world / need} is missing; build the world first (`sicog world build`)")
    if clip_steps < 1 or lm_steps < 1:
        raise ValueError("--clip-steps and --lm-steps must be at least 1")
    if instruct.total_steps:   # before any training: an old world fails here, not after the CLIP
        check_focus_data(read_records(world / "data/lm_chat.jsonl"), instruct, world / "data/lm_chat.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(str(world / "tokenizer"))
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "world": str(world),
        "seed": seed,
        "clip": pretrain_clip(world, out, tokenizer, clip_steps, clip_batch, clip_lr, seed, shape_loss),
        "lm": pretrain_lm(world, out, tokenizer, lm_steps, lm_batch, lm_block, lm_lr, seed, instruct),
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
    parser.add_argument("--instruct-batch", type=int, default=InstructPlan.batch)
    parser.add_argument("--instruct-lr", type=float, default=InstructPlan.lr,
                        help="peak rate of every part of the instruction phase (at 1e-3 the tiny LM never learns "
                             "to look up its context)")
    parser.add_argument("--instruct-easy-steps", type=int, default=None,
                        help="the instruction phase's easy part: batches of single colour-existence questions on "
                             "name-list contexts (0: none); default " + str(DEFAULT_STEPS["easy"]))
    parser.add_argument("--instruct-easy-tries", type=int, default=InstructPlan.easy_tries,
                        help="attempts of the easy part, each from the same weights with a fresh batch order, until "
                             "its held-out questions are answered (the best attempt is kept)")
    parser.add_argument("--instruct-focus-steps", type=int, default=None,
                        help="the instruction phase's last part, where most of each batch is single-question "
                             f"conversations (0: none); default {DEFAULT_STEPS['focus']}")
    parser.add_argument("--instruct-focus-batch", type=int, default=InstructPlan.focus_batch)
    parser.add_argument("--instruct-focus-share", type=float, default=InstructPlan.focus_share,
                        help="share of each focus batch drawn from the single-question conversations")
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

    def steps(flag: str, default: int) -> int:   # a flag given wins, then --steps, then the default
        value = getattr(args, flag)
        return value if value is not None else (args.steps or default)

    instruct = InstructPlan(steps=steps("instruct_steps", DEFAULT_STEPS["instruct"]), batch=args.instruct_batch,
                            lr=args.instruct_lr, easy_steps=steps("instruct_easy_steps", DEFAULT_STEPS["easy"]),
                            easy_tries=args.instruct_easy_tries,
                            focus_steps=steps("instruct_focus_steps", DEFAULT_STEPS["focus"]),
                            focus_batch=args.instruct_focus_batch, focus_share=args.instruct_focus_share)
    report = pretrain(args.world, args.out, clip_steps, lm_steps, args.clip_batch, args.lm_batch, args.lm_block,
                      args.clip_lr, args.lm_lr, args.seed, args.shape_loss, instruct)
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
        print(f"LM instruction phase: {i['steps']} + {i['easy_steps']} easy + {i['focus_steps']} focus steps at lr {i['lr']:g}, "
              f"held-out answers looked up in the context: {shown}, {i['seconds']}s")
        if i["easy_attempts"]:
            print("  easy part: held-out easy accuracy by attempt "
                  + ", ".join(f"{a['held_out_easy_accuracy']:.3f}" for a in i["easy_attempts"]))
    print(f"saved {Path(args.out) / 'clip'} and {Path(args.out) / 'llm'}")
    return 0
