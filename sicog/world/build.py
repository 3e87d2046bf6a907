"""`sicog world build`: render the world and write every data split of the SICOG cycle.

Layout of the output folder (all paths in records are relative to it):

    images/<split>/<id>.png, images/<split>/<id>.json   rendered scenes and their scene graphs
    world.jsonl                                          every scene graph, its split, its questions
    data/clip_pretrain.jsonl, data/lm_text.txt           unimodal pre-training (small CLIP, small LM)
    data/lm_chat.jsonl                                   the small LM's instruction phase (text only)
    data/align.jsonl                                     stage 1: noisy web-style alt-text
    data/cod_seed.jsonl, dd_seed.jsonl, cod_seed_raw.jsonl       stage 0 perception seed
    data/cot_seed.jsonl, cot_short_seed.jsonl, llava_cot_seed.json  stage 0 reasoning seed
    data/sft.jsonl                                       stage 2 instruction data
    data/sft_listing.jsonl                               its listing conversations alone (trained first)
    data/pool_images.jsonl, pool_questions.jsonl         unlabeled inputs for self-generation
    data/pool_gold/                                      gold answers for the pool (oracle rows only)
    data/val/, data/eval/                                qa.jsonl, pope.jsonl, captions.jsonl
    tokenizer/                                           HF tokenizer trained on the world's text
    manifest.json                                        counts and sha256 of every file

Every split is drawn from its own images; the same seed gives byte-identical files.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from tqdm import tqdm

from sicog.data.formats import (
    COD_ANNOTATION_SUFFIX, SHORT_ANSWER_PHRASE, generation_prompt, to_step_by_step_question,
)
from sicog.data.records import atomic_write_text, write_json, write_jsonl
from sicog.data.template import chatml
from sicog.world import questions as Q
from sicog.world import texts as T
from sicog.world.conversations import (
    MC_RATE, gold_question, gpt, human, human_prompt, perception_questions, pope_probes, qa_record, qa_turns,
    scene_context, text_rng, unique_questions,
)
from sicog.world.render import png_bytes, render_scene
from sicog.world.scene import sample_scene
from sicog.world.tokenizer import ENDOFTEXT, save_tokenizer, train_tokenizer

log = logging.getLogger(__name__)

# Images per split, questions per evaluation image, probes, caption images, tokenizer size.
SIZES: dict[str, dict[str, int]] = {
    "micro": dict(clip=48, align=40, cod_seed=12, cot_seed=12, sft=40, sft_text=4, pool=16,
                  val=8, val_pope=4, val_captions=4, eval=24, eval_pope=8, eval_captions=8,
                  qa_per_image=2, vocab=1024),
    "mini": dict(clip=2000, align=1500, cod_seed=300, cot_seed=300, sft=1300, sft_text=40, pool=500,
                 val=250, val_pope=50, val_captions=25, eval=250, eval_pope=50, eval_captions=100,
                 qa_per_image=2, vocab=2048),
}
SPLITS = ("clip", "align", "cod_seed", "cot_seed", "sft", "pool", "val", "eval")
LM_CHAT_PER_SCENE = 4   # instruction-phase conversations per `clip` scene
# Single-question existence conversations per `clip` scene in the instruction phase: each draws its
# kind (Q.EXISTENCE_KINDS), its answer (yes half the time) and its context (names or description)
# afresh. Inside six-question conversations the tiny LM never learned to answer existence questions
# (held-out accuracy at chance after 3,000 steps); from these alone it learned them in 2 of 8 runs.
LM_EXISTENCE_PER_SCENE = 6
# The easy ones, for the instruction phase's easy part (`InstructPlan.easy_steps`): the colour kind
# ("Is there a red object?", one word to match) on the object-name context. From these alone the
# tiny LM learned them (by step 400) in 1 of 7 batch orders measured, and the pair kind afterwards;
# with every kind and context from the start it stayed at chance in 3 more (README, Results).
LM_EASY_EXISTENCE_PER_SCENE = 4


class WorldWriter:
    def __init__(self, out: Path, size: str, seed: int):
        if size not in SIZES:
            raise ValueError(f"unknown world size {size!r}; use one of {sorted(SIZES)}")
        self.out, self.size, self.seed, self.n = out, size, seed, SIZES[size]
        self.scenes: dict[str, list[dict]] = {}
        self.questions: dict[str, list[dict]] = {}   # scene id -> gold questions
        self.counts: dict[str, int] = {}
        self.tokenizer_vocab = 0

    # -- files -----------------------------------------------------------------------------------
    def jsonl(self, rel: str, records: list[dict]) -> None:
        self.counts[rel] = write_jsonl(self.out / rel, records)

    def render(self) -> None:
        total = sum(self.n[s] for s in SPLITS)
        with tqdm(total=total, desc="render scenes", unit="img") as bar:
            for split in SPLITS:
                folder = self.out / "images" / split
                folder.mkdir(parents=True, exist_ok=True)
                scenes = []
                for i in range(self.n[split]):
                    scene = sample_scene(self.seed, split, i)
                    (self.out / scene["image"]).write_bytes(png_bytes(render_scene(scene)))
                    graph = json.dumps(scene, ensure_ascii=False, indent=1) + "\n"
                    (self.out / scene["image"]).with_suffix(".json").write_text(graph, encoding="utf-8")
                    scenes.append(scene)
                    bar.update(1)
                self.scenes[split] = scenes

    # -- splits ----------------------------------------------------------------------------------
    def clip_and_lm(self) -> list[str]:
        records, docs = [], []
        for scene in self.scenes["clip"]:
            rng = text_rng(self.seed, scene["id"], "clip")
            records.append({"id": scene["id"], "image": scene["image"], "caption": T.clip_caption(scene, rng)})
            q = Q.make_question(scene, rng, rng.choice(Q.SKILLS), mc=rng.random() < MC_RATE)
            exists = Q.existence_question(scene, rng)
            kinds = rng.sample(["describe", "cod", "cot", "chat", "chat-exists"], k=2)
            for kind in kinds:
                if kind == "describe":
                    docs.append(T.describe(scene))
                elif kind == "cod":
                    docs.append(f"{rng.choice(T.CAPTION_QUESTIONS)}{COD_ANNOTATION_SUFFIX}\n\n{T.cod_caption(scene)}")
                elif kind == "cot":
                    docs.append(f"{to_step_by_step_question(Q.short_prompt(q))}\n\n{Q.cot_answer(q)}")
                else:
                    # a question answered from a description in the context: the in-context lookup
                    # that a VLM reuses once its image tokens read like the description
                    asked = q if kind == "chat" else exists
                    docs.append(chatml(f"{T.describe(scene)}\n{Q.short_prompt(asked)}", asked["answer"]))
        self.jsonl("data/clip_pretrain.jsonl", records)
        atomic_write_text(self.out / "data/lm_text.txt", "".join(f"{d}\n{ENDOFTEXT}\n" for d in docs))
        self.counts["data/lm_text.txt"] = len(docs)
        return docs

    def lm_chat(self) -> None:
        """Text-only conversations for the tiny LLM's instruction phase (it stands in for an -Instruct
        model): a scene in the context, then six questions about it answered from the context.

        Each `clip` scene gives `LM_CHAT_PER_SCENE` conversations. Half the contexts are the scene's
        full description and half only its object names ("green circle, blue cross"): looking a word
        of the question up in a long context is not learned from long contexts alone, but is when
        short ones come alongside (`benchmarks/probe_lookup_text.py`). Then `LM_EXISTENCE_PER_SCENE`
        single existence questions, kind, answer and context drawn for each, and
        `LM_EASY_EXISTENCE_PER_SCENE` easy ones (colour kind, name list; `part: easy`). `context`
        records which context, and `skills` the skill of each question in order."""
        recs = []
        for scene in self.scenes["clip"]:
            for k in range(LM_CHAT_PER_SCENE):
                rng = text_rng(self.seed, scene["id"], f"lm-chat-{k}")
                qs = perception_questions(scene, rng, n_skills=4, n_existence=2)
                kind = "names" if rng.random() < 0.5 else "description"
                recs.append({"id": f"{scene['id']}-chat-{k}", "context": kind, "skills": [q["skill"] for q in qs],
                             "conversations": qa_turns(qs, image=False, context=scene_context(scene, kind))})
            for k in range(LM_EXISTENCE_PER_SCENE):
                rng = text_rng(self.seed, scene["id"], f"lm-exists-{k}")
                q = Q.existence_question(scene, rng, rng.choice(Q.EXISTENCE_KINDS))
                kind = "names" if rng.random() < 0.5 else "description"
                recs.append({"id": f"{scene['id']}-chat-exists-{k}", "context": kind, "skills": [q["skill"]],
                             "conversations": qa_turns([q], image=False, context=scene_context(scene, kind))})
            for k in range(LM_EASY_EXISTENCE_PER_SCENE):
                q = Q.existence_question(scene, text_rng(self.seed, scene["id"], f"lm-easy-{k}"), "colour")
                recs.append({"id": f"{scene['id']}-chat-easy-{k}", "context": "names", "part": "easy", "skills": [q["skill"]],
                             "conversations": qa_turns([q], image=False, context=scene_context(scene, "names"))})
        self.jsonl("data/lm_chat.jsonl", recs)

    def align(self) -> None:
        recs = []
        for scene in self.scenes["align"]:
            rng = text_rng(self.seed, scene["id"], "align")
            recs.append({"id": scene["id"], "image": scene["image"],
                         "conversations": [human(rng.choice(T.SHORT_CAPTION_QUESTIONS)), gpt(T.alt_text(scene, rng))]})
        self.jsonl("data/align.jsonl", recs)

    def cod_seed(self) -> None:
        cod, dd, raw = [], [], []
        for scene in self.scenes["cod_seed"]:
            rng = text_rng(self.seed, scene["id"], "cod")
            question = rng.choice(T.CAPTION_QUESTIONS)
            base = {"id": scene["id"], "image": scene["image"]}
            cod.append({**base, "conversations": [human(question + COD_ANNOTATION_SUFFIX), gpt(T.cod_caption(scene))]})
            dd.append({**base, "conversations": [human(question), gpt(T.describe(scene))]})
            raw.append({**base, "conversations": [human(question)], "caption": T.alt_text(scene, rng)})
        self.jsonl("data/cod_seed.jsonl", cod)
        self.jsonl("data/dd_seed.jsonl", dd)
        self.jsonl("data/cod_seed_raw.jsonl", raw)

    def cot_seed(self) -> None:
        cot, short, tagged = [], [], []
        for i, scene in enumerate(self.scenes["cot_seed"]):
            rng = text_rng(self.seed, scene["id"], "cot")
            q = Q.make_question(scene, rng, Q.SKILLS[i % len(Q.SKILLS)], mc=rng.random() < 0.3)
            qid = f"{scene['id']}-q0"
            self.questions[scene["id"]] = [gold_question(qid, q)]
            base = {"id": qid, "image": scene["image"]}
            cot.append({**base, "conversations": [human(to_step_by_step_question(Q.short_prompt(q))), gpt(Q.cot_answer(q))]})
            short.append({**base, "conversations": [human(Q.short_prompt(q)), gpt(q["answer"])]})
            tagged.append({**base, "conversations": [human(Q.short_prompt(q)), gpt(Q.llava_cot_answer(q))]})
        self.jsonl("data/cot_seed.jsonl", cot)
        self.jsonl("data/cot_short_seed.jsonl", short)
        write_json(self.out / "data/llava_cot_seed.json", tagged)
        self.counts["data/llava_cot_seed.json"] = len(tagged)

    def sft(self) -> None:
        """Instruction data: a few detailed descriptions, the rest several short questions per image.

        Each image's conversation holds one existence question (yes or no, half each, like the POPE
        probes) and 2-4 questions of the benchmark skills, so that one epoch gives the model several
        thousand short perception answers at the cost of one image encoding per conversation. Each
        image also gets one single-question conversation per existence kind (colour, shape, pair):
        the question right after the image, where a small model learns the lookup soonest; and one per
        listing kind (which colours, which objects: Q.listing_question), the direct reading of the
        image that the small model needs before it learns those lookups from images.
        """
        recs, listing = [], []
        for scene in self.scenes["sft"]:
            rng = text_rng(self.seed, scene["id"], "sft")
            base = {"id": scene["id"], "image": scene["image"]}
            if rng.random() < 0.15:
                turns = [human(rng.choice(T.DETAIL_QUESTIONS)), gpt(T.describe(scene))]
            else:
                turns = qa_turns(perception_questions(scene, rng, n_skills=rng.choice((2, 3, 4)), n_existence=1),
                                 image=True)
            recs.append({**base, "conversations": turns})
            for kind in Q.EXISTENCE_KINDS:   # one single-question conversation of each kind
                q = Q.existence_question(scene, text_rng(self.seed, scene["id"], f"sft-exists-{kind}"), kind)
                recs.append({"id": f"{scene['id']}-exists-{kind}", "image": scene["image"],
                             "conversations": qa_turns([q], image=True)})
            for kind in Q.LISTING_KINDS:
                listing.append({"id": f"{scene['id']}-list-{kind}", "image": scene["image"],
                                "conversations": qa_turns([Q.listing_question(scene, kind)], image=True)})
                recs.append(listing[-1])
        pairs = Q.text_only_questions()
        for i in range(self.n["sft_text"]):
            question, answer = pairs[i % len(pairs)]
            recs.append({"id": f"sft-text-{i:05d}",
                         "conversations": [human(f"{question} {SHORT_ANSWER_PHRASE}", image=False), gpt(answer)]})
        self.jsonl("data/sft.jsonl", recs)
        self.jsonl("data/sft_listing.jsonl", listing)   # the same listing records alone: a stage-2 curriculum

    def pool(self) -> None:
        images, questions, cod, dd, cot, cot_short = [], [], [], [], [], []
        for i, scene in enumerate(self.scenes["pool"]):
            rng = text_rng(self.seed, scene["id"], "pool")
            base = {"id": scene["id"], "image": scene["image"]}
            images.append(dict(base))
            cod.append({**base, "conversations": [human_prompt(base, "caption", "cod-default"), gpt(T.cod_caption(scene))]})
            dd.append({**base, "conversations": [human_prompt(base, "caption", "default"), gpt(T.describe(scene))]})
            q = Q.make_question(scene, rng, Q.SKILLS[i % len(Q.SKILLS)], mc=False)
            qid = f"{scene['id']}-q0"
            self.questions[scene["id"]] = [gold_question(qid, q)]
            question = {"id": qid, "image": scene["image"],
                        "conversations": [human(to_step_by_step_question(q["question"]))]}
            questions.append(question)
            gold = {"answer": q["answer"], "skill": q["skill"], "type": q["type"]}
            cot.append({**question, "conversations": question["conversations"] + [gpt(Q.cot_answer(q))], **gold})
            cot_short.append({"id": qid, "image": scene["image"],
                              "conversations": [human_prompt(question, "reasoning", "default"), gpt(q["answer"])], **gold})
        self.jsonl("data/pool_images.jsonl", images)
        self.jsonl("data/pool_questions.jsonl", questions)
        self.jsonl("data/pool_gold/cod.jsonl", cod)
        self.jsonl("data/pool_gold/dd.jsonl", dd)
        self.jsonl("data/pool_gold/cot.jsonl", cot)
        self.jsonl("data/pool_gold/cot_short.jsonl", cot_short)

    def benchmark(self, split: str) -> None:
        scenes = self.scenes[split]
        qa = []
        for i, scene in enumerate(scenes):
            rng = text_rng(self.seed, scene["id"], "qa")
            k0 = i * self.n["qa_per_image"]
            skills = [Q.SKILLS[(k0 + k) % len(Q.SKILLS)] for k in range(self.n["qa_per_image"])]
            gold = []
            for k, q in enumerate(unique_questions(scene, rng, skills, MC_RATE)):
                qid = f"{scene['id']}-q{k}"
                qa.append(qa_record(qid, scene, q))
                gold.append(gold_question(qid, q))
            self.questions[scene["id"]] = gold
        self.jsonl(f"data/{split}/qa.jsonl", qa)
        self.jsonl(f"data/{split}/pope.jsonl", pope_probes(scenes[: self.n[f"{split}_pope"]], self.seed))
        caption_prompt = generation_prompt({}, "caption", "default")
        self.jsonl(f"data/{split}/captions.jsonl", [
            {"id": s["id"], "image": s["image"], "scene_id": s["id"], "question": caption_prompt,
             "scene": {k: s[k] for k in ("width", "height", "background", "objects")}}
            for s in scenes[: self.n[f"{split}_captions"]]
        ])

    def world_file(self) -> None:
        rows = []
        for split in SPLITS:
            for scene in self.scenes[split]:
                row = dict(scene)
                if scene["id"] in self.questions:
                    row["questions"] = self.questions[scene["id"]]
                rows.append(row)
        self.jsonl("world.jsonl", rows)

    def tokenizer(self, docs: list[str]) -> None:
        prompts = list(T.CAPTION_QUESTIONS + T.SHORT_CAPTION_QUESTIONS + T.DETAIL_QUESTIONS)
        prompts += [generation_prompt({}, "caption", p) for p in ("cod-default", "default")]
        tok = train_tokenizer(docs + prompts, vocab_size=self.n["vocab"])
        save_tokenizer(tok, self.out / "tokenizer")
        self.tokenizer_vocab = len(tok)

    def manifest(self) -> dict:
        files = {}
        for p in sorted(self.out.rglob("*")):
            if p.is_file() and p.name != "manifest.json":
                files[p.relative_to(self.out).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
        images = {split: len(self.scenes[split]) for split in SPLITS}
        manifest = {"size": self.size, "seed": self.seed, "images": images, "records": self.counts,
                    "tokenizer_vocab": self.tokenizer_vocab, "files": files}
        write_json(self.out / "manifest.json", manifest)
        return manifest


def prepare_out(out: Path) -> None:
    """An empty folder, or a previous world (which is replaced); anything else is refused."""
    if out.exists() and any(out.iterdir()):
        if not (out / "manifest.json").exists():
            raise SystemExit(f"{out} is not empty and holds no world (no manifest.json); choose another --out")
        for name in ("images", "data", "tokenizer"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("world.jsonl", "manifest.json"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def build_world(out: str | Path, size: str = "micro", seed: int = 0) -> dict:
    """Build the world in `out`; returns the manifest."""
    out = Path(out)
    writer = WorldWriter(out, size, seed)
    prepare_out(out)
    writer.render()
    docs = writer.clip_and_lm()
    writer.lm_chat()
    writer.align()
    writer.cod_seed()
    writer.cot_seed()
    writer.sft()
    writer.pool()
    writer.benchmark("val")
    writer.benchmark("eval")
    writer.world_file()
    writer.tokenizer(docs)
    manifest = writer.manifest()
    log.info("built the %s world (seed %d) in %s: %d images, %d files", size, seed, out,
             sum(manifest["images"].values()), len(manifest["files"]))
    return manifest


def format_table(manifest: dict) -> str:
    rows = [("images: " + k, v) for k, v in manifest["images"].items()]
    rows += [(k, v) for k, v in manifest["records"].items()]
    rows.append(("tokenizer vocabulary", manifest["tokenizer_vocab"]))
    width = max(len(k) for k, _ in rows)
    lines = [f"mini world '{manifest['size']}' (seed {manifest['seed']}), {len(manifest['files'])} files"]
    lines += [f"  {k:<{width}}  {v:>6}" for k, v in rows]
    return "\n".join(lines)


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="output folder (empty, or a previous world to replace)")
    parser.add_argument("--size", default="micro", choices=sorted(SIZES), help="micro: tests; mini: the reproduction")
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    manifest = build_world(args.out, args.size, args.seed)
    print(format_table(manifest))
    return 0
