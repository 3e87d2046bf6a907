"""The conversations and records the world's splits are written from: the human and gpt turns,
questions drawn for a scene without repeats, short-answer conversations with an optional text
context, the QA and gold-question records, and POPE's yes/no object probes. Each draws its text
from `text_rng`, a random stream per (seed, scene, purpose), so the same seed gives the same files."""
from __future__ import annotations

import random
from collections import Counter

from sicog.data.formats import IMAGE_TOKEN, SHORT_ANSWER_PHRASE, generation_prompt
from sicog.world import questions as Q
from sicog.world import texts as T
from sicog.world.vocab import COLOURS, SHAPES

POPE_VARIANTS = ("random", "popular", "adversarial")
MC_RATE = 0.4


def text_rng(seed: int, key: str, purpose: str) -> random.Random:
    return random.Random(f"sicog-text:{seed}:{key}:{purpose}")


def human(text: str, image: bool = True) -> dict:
    return {"from": "human", "value": f"{IMAGE_TOKEN}\n{text}" if image else text}


def gpt(text: str) -> dict:
    return {"from": "gpt", "value": text}


def unique_questions(scene: dict, rng: random.Random, skills: list[str], mc_rate: float) -> list[dict]:
    """One question per entry of `skills`, no two alike for this scene."""
    out, seen = [], set()
    for skill in skills:
        for shift in range(len(Q.SKILLS)):
            s = Q.SKILLS[(Q.SKILLS.index(skill) + shift) % len(Q.SKILLS)]
            q = Q.make_question(scene, rng, s, mc=rng.random() < mc_rate)
            if q["question"] not in seen:
                seen.add(q["question"])
                out.append(q)
                break
    return out


def perception_questions(scene: dict, rng: random.Random, n_skills: int, n_existence: int) -> list[dict]:
    """`n_skills` questions of random skills, no two alike, with `n_existence` existence questions
    (yes or no, half each) inserted at random places."""
    qs = unique_questions(scene, rng, [rng.choice(Q.SKILLS) for _ in range(n_skills)], MC_RATE)
    for _ in range(n_existence):
        qs.insert(rng.randrange(len(qs) + 1), Q.existence_question(scene, rng))
    return qs


def scene_context(scene: dict, kind: str) -> str:
    """A scene as text context: its object names ("green circle, blue cross") or its full description."""
    return ", ".join(T.name(o) for o in scene["objects"]) if kind == "names" else T.describe(scene)


def qa_turns(questions: list[dict], image: bool, context: str = "") -> list[dict]:
    """A conversation of short answers; the first question carries `<image>` (when `image`) and,
    before it, `context` on its own line."""
    turns = []
    for k, q in enumerate(questions):
        text = Q.short_prompt(q)
        if k == 0 and context:
            text = f"{context}\n{text}"
        turns.append(human(text, image=image and k == 0))
        turns.append(gpt(q["answer"]))
    return turns


def qa_record(qid: str, scene: dict, q: dict) -> dict:
    rec = {"id": qid, "image": scene["image"], "question": f"{IMAGE_TOKEN}\n{Q.short_prompt(q)}",
           "answer": q["answer"], "skill": q["skill"], "type": q["type"]}
    if q["type"] == "mc":
        rec["options"] = q["options"]
    return rec


def gold_question(qid: str, q: dict) -> dict:
    """The ground truth of a question as `world.jsonl` keeps it."""
    rec = {"id": qid, "question": Q.short_prompt(q), "answer": q["answer"], "short_answer": q["short_answer"],
           "skill": q["skill"], "type": q["type"]}
    if q["type"] == "mc":
        rec["options"] = q["options"]
    return rec


def human_prompt(record: dict, task: str, prompt: str) -> dict:
    return {"from": "human", "value": generation_prompt(record, task, prompt)}


def pope_probes(scenes: list[dict], seed: int) -> list[dict]:
    """Balanced yes/no object probes in POPE's three variants.

    An object is a (colour, shape) pair. `random` asks about any absent pair, `popular` about one of
    the absent pairs most frequent in these scenes, `adversarial` about an absent pair that shares the
    colour or the shape of a present object.
    """
    all_pairs = [f"{c} {s}" for c in sorted(COLOURS) for s in SHAPES]
    freq = Counter(T.name(o) for s in scenes for o in s["objects"])
    by_popularity = sorted(all_pairs, key=lambda p: (-freq[p], p))
    out = []
    for scene in scenes:
        rng = text_rng(seed, scene["id"], "pope")
        present = [T.name(o) for o in scene["objects"]]
        absent = [p for p in all_pairs if p not in present]
        for variant in POPE_VARIANTS:
            if variant == "random":
                negative = rng.choice(absent)
            elif variant == "popular":
                negative = rng.choice([p for p in by_popularity if p not in present][:3])
            else:
                colours = {o["colour"] for o in scene["objects"]}
                shapes = {o["shape"] for o in scene["objects"]}
                near = [p for p in absent if p.split()[0] in colours or p.split()[1] in shapes]
                negative = rng.choice(near or absent)
            for answer, obj in (("yes", rng.choice(present)), ("no", negative)):
                out.append({"id": f"{scene['id']}-pope-{variant}-{answer}", "image": scene["image"],
                            "question": f"{IMAGE_TOKEN}\nIs there {T.with_article(obj)} in the image? {SHORT_ANSWER_PHRASE}",
                            "answer": answer, "object": obj, "variant": variant, "skill": "pope"})
    return out

