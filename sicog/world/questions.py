"""Questions about a scene with their gold answers and gold four-step reasoning.

A question is a dict `{"skill", "type", "question", "answer", "options", "steps"}`:
`question` is the bare question (no instruction), `answer` the short answer (for multiple choice:
the option letter), `options` the choices (multiple choice only) and `steps` the four CoT step
bodies (task, visual information, reasoning, conclusion). The conclusion is the short answer itself,
so the short form of a CoT answer is exactly the answer.
"""
from __future__ import annotations

import random
from collections import Counter
from typing import Callable

from sicog.data.formats import COT_HEADINGS, COT_TAGS, SHORT_ANSWER_PHRASE, format_steps
from sicog.world.scene import entirely_left_of, relation
from sicog.world.texts import full_phrase, join_list, label_phrase, name, objects_phrase, with_article
from sicog.world.vocab import (
    COLOURS, DIGITS, LETTERS, POSITION_PHRASES, POSITIONS, RELATION_PHRASES, RELATIONS, SHAPES, SIDES, SIZE_WORDS,
    plural,
)

SKILLS: tuple[str, ...] = ("count", "colour", "shape", "position", "relation", "text", "multi-step")
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
OPTION_LETTERS = "ABCD"


def visual_information(scene: dict) -> str:
    """Step 2 of every gold CoT answer: the objects with their attributes and places."""
    objs = scene["objects"]
    items = [f"{with_article(full_phrase(o))} {POSITION_PHRASES[o['position']]}" for o in objs]
    return f"The image shows {objects_phrase(len(objs))}: {join_list(items)}."


def _q(skill, question, answer, domain, task, reasoning):
    return {"skill": skill, "question": question, "answer": answer, "domain": domain,
            "task": task, "reasoning": reasoning}


def _unique(objs: list[dict], key: Callable[[dict], object]) -> list[dict]:
    counts = Counter(key(o) for o in objs)
    return [o for o in objs if counts[key(o)] == 1]


def q_count(scene: dict, rng: random.Random) -> dict | None:
    objs = scene["objects"]
    variant = rng.randrange(3)
    if variant == 0:
        present = sorted({o["shape"] for o in objs})
        shape = rng.choice(present) if rng.random() < 0.8 else rng.choice(SHAPES)
        hits = [o for o in objs if o["shape"] == shape]
        what = plural(shape)
        question = f"How many {what} are there in the image?"
    elif variant == 1:
        present = sorted({o["colour"] for o in objs})
        colour = rng.choice(present) if rng.random() < 0.8 else rng.choice(sorted(COLOURS))
        hits = [o for o in objs if o["colour"] == colour]
        what = f"{colour} objects"
        question = f"How many {colour} objects are there in the image?"
    else:
        hits = list(objs)
        what = "objects"
        question = "How many objects are there in the image?"
    if hits:
        reasoning = (f"The {what} in the image are {join_list(['the ' + name(o) for o in hits])}. "
                     f"Counting them gives {len(hits)}.")
    else:
        reasoning = f"None of the objects is one of the {what}, so the count is 0."
    return _q("count", question, str(len(hits)), "count", f"count the {what} in the image", reasoning)


def q_colour(scene: dict, rng: random.Random) -> dict | None:
    objs = scene["objects"]
    by_shape = _unique(objs, lambda o: o["shape"])
    if by_shape:
        o = rng.choice(by_shape)
        ref = f"the {o['shape']}"
    else:
        by_label = _unique([o for o in objs if o["label"]], lambda o: o["label"])
        if not by_label:
            return None
        o = rng.choice(by_label)
        ref = f"the object {label_phrase(o)}"
    reasoning = f"{ref[0].upper() + ref[1:]} is the {full_phrase(o)}, so its color is {o['colour']}."
    return _q("colour", f"What color is {ref}?", o["colour"], "colour", f"find the color of {ref}", reasoning)


def q_shape(scene: dict, rng: random.Random) -> dict | None:
    objs = scene["objects"]
    by_colour = _unique(objs, lambda o: o["colour"])
    if not by_colour:
        return None
    o = rng.choice(by_colour)
    ref = f"the {o['colour']} object"
    reasoning = f"The only {o['colour']} object is the {full_phrase(o)}, so its shape is a {o['shape']}."
    return _q("shape", f"What shape is {ref}?", o["shape"], "shape", f"find the shape of {ref}", reasoning)


def q_position(scene: dict, rng: random.Random) -> dict | None:
    o = rng.choice(scene["objects"])
    reasoning = f"The {name(o)} is {POSITION_PHRASES[o['position']]} of the image, so its position is {o['position']}."
    return _q("position", f"Where is the {name(o)} in the image?", o["position"], "position",
              f"find where the {name(o)} is in the image", reasoning)


def _pairs(scene: dict) -> list[tuple[dict, str, dict]]:
    objs = scene["objects"]
    out = []
    for a in objs:
        for b in objs:
            if a is not b:
                rel = relation(a, b)
                if rel:
                    out.append((a, rel, b))
    return out


def q_relation(scene: dict, rng: random.Random) -> dict | None:
    pairs = _pairs(scene)
    if not pairs:
        return None
    a, rel, b = rng.choice(pairs)
    fact = (f"The {name(a)} is {POSITION_PHRASES[a['position']]} and the {name(b)} is "
            f"{POSITION_PHRASES[b['position']]}; the {name(a)} is {RELATION_PHRASES[rel]} the {name(b)}.")
    if rng.random() < 0.5:
        question = f"Where is the {name(a)} relative to the {name(b)}?"
        return _q("relation", question, rel, "relation",
                  f"find where the {name(a)} is relative to the {name(b)}", fact)
    asked = rel if rng.random() < 0.5 else rng.choice([r for r in RELATIONS if r != rel])
    answer = "yes" if asked == rel else "no"
    question = f"Is the {name(a)} {RELATION_PHRASES[asked]} the {name(b)}?"
    return _q("relation", question, answer, "yesno",
              f"decide whether the {name(a)} is {RELATION_PHRASES[asked]} the {name(b)}",
              f"{fact} So the answer is {answer}.")


def q_text(scene: dict, rng: random.Random) -> dict | None:
    labelled = [o for o in scene["objects"] if o["label"]]
    if not labelled:
        return None
    o = rng.choice(labelled)
    kind = "digit" if o["label"].isdigit() else "letter"
    unique = _unique(labelled, lambda x: x["label"])
    if o in unique and rng.random() < 0.4:
        question = f"Which object is marked with the {kind} {o['label']}?"
        return _q("text", question, name(o), "object", f"find the object marked with the {kind} {o['label']}",
                  f"The {kind} {o['label']} is printed on the {SIZE_WORDS[o['size']]} {name(o)}, "
                  f"so the object is the {name(o)}.")
    question = f"What {kind} is written on the {name(o)}?"
    return _q("text", question, o["label"], kind, f"read the {kind} written on the {name(o)}",
              f"The {name(o)} is {label_phrase(o)}, so the {kind} is {o['label']}.")


def q_multi_step(scene: dict, rng: random.Random) -> dict | None:
    objs = scene["objects"]
    makers = []
    if len(objs) >= 2:
        makers.append("left_count")
        makers.append("neighbour_colour")
    digits = [o for o in objs if o["label"] and o["label"].isdigit()]
    if len(digits) >= 2:
        makers += ["digit_sum", "digit_sum"]
    if len({o["colour"] for o in objs}) < len(objs):
        makers.append("same_colour")
    while makers:
        kind = makers.pop(rng.randrange(len(makers)))
        if kind == "left_count":
            anchors = [o for o in objs if any(entirely_left_of(x, o) for x in objs)]
            anchor = rng.choice(anchors) if anchors and rng.random() < 0.8 else rng.choice(objs)
            hits = [x for x in objs if entirely_left_of(x, anchor)]
            listed = join_list(["the " + name(x) for x in hits]) if hits else "no object"
            reasoning = (f"The {name(anchor)} starts at x = {anchor['bbox'][0]}. The objects whose right edge lies "
                         f"before that are {listed}. So {len(hits)} object{'s are' if len(hits) != 1 else ' is'} "
                         f"entirely to the left of it.")
            return _q("multi-step", f"How many objects are entirely to the left of the {name(anchor)}?",
                      str(len(hits)), "count", f"count the objects entirely to the left of the {name(anchor)}",
                      reasoning)
        if kind == "digit_sum":
            values = [int(o["label"]) for o in digits]
            reasoning = (f"The digits printed on the objects are {join_list([str(v) for v in values])}. "
                         f"Adding them: {' + '.join(str(v) for v in values)} = {sum(values)}.")
            return _q("multi-step", "What is the sum of the digits printed on the objects?", str(sum(values)),
                      "count", "add up the digits printed on the objects", reasoning)
        if kind == "same_colour":
            repeated = [o for o in objs if sum(x["colour"] == o["colour"] for x in objs) > 1]
            anchor = rng.choice(repeated) if rng.random() < 0.8 else rng.choice(objs)
            others = [x for x in objs if x is not anchor and x["colour"] == anchor["colour"]]
            listed = join_list(["the " + name(x) for x in others]) if others else "no other object"
            reasoning = (f"The {name(anchor)} is {anchor['colour']}. The other {anchor['colour']} objects are "
                         f"{listed}, so the count is {len(others)}.")
            return _q("multi-step", f"How many other objects have the same color as the {name(anchor)}?",
                      str(len(others)), "count", f"count the other objects with the color of the {name(anchor)}",
                      reasoning)
        if kind == "neighbour_colour":
            options = []
            for anchor in objs:
                for rel in RELATIONS:
                    hits = [x for x in objs if x is not anchor and relation(x, anchor) == rel]
                    if len(hits) == 1:
                        options.append((anchor, rel, hits[0]))
            if not options:
                continue
            anchor, rel, hit = rng.choice(options)
            question = f"What color is the object {RELATION_PHRASES[rel]} the {name(anchor)}?"
            reasoning = (f"The {name(anchor)} is {POSITION_PHRASES[anchor['position']]}. The only object "
                         f"{RELATION_PHRASES[rel]} it is the {name(hit)}, whose color is {hit['colour']}.")
            return _q("multi-step", question, hit["colour"], "colour",
                      f"find the object {RELATION_PHRASES[rel]} the {name(anchor)} and name its color", reasoning)
    return None


MAKERS: dict[str, Callable[[dict, random.Random], dict | None]] = {
    "count": q_count, "colour": q_colour, "shape": q_shape, "position": q_position,
    "relation": q_relation, "text": q_text, "multi-step": q_multi_step,
}


def _domain(domain: str, answer: str, scene: dict) -> list[str]:
    if domain == "colour":
        return sorted(COLOURS)
    if domain == "shape":
        return list(SHAPES)
    if domain == "position":
        return list(POSITIONS)
    if domain == "relation":
        return list(RELATIONS)
    if domain == "count":
        n = int(answer)
        return [str(k) for k in range(max(0, n - 4), n + 5)]
    if domain == "letter":
        return list(LETTERS)
    if domain == "digit":
        return list(DIGITS)
    if domain == "object":
        return sorted({name(o) for o in scene["objects"]} | {f"{c} {s}" for c in COLOURS for s in SHAPES})
    if domain == "yesno":
        return ["yes", "no"]
    raise ValueError(f"unknown answer domain {domain!r}")


def make_question(scene: dict, rng: random.Random, skill: str, mc: bool) -> dict:
    """A question of `skill` (or, when the scene cannot give one, of the next skill that can)."""
    start = SKILLS.index(skill)
    for k in range(len(SKILLS)):
        q = MAKERS[SKILLS[(start + k) % len(SKILLS)]](scene, rng)
        if q is not None:
            return finish_question(q, scene, rng, mc)
    raise ValueError(f"scene {scene['id']} has no objects")  # position always applies otherwise


EXISTENCE_KINDS: tuple[str, ...] = ("pair", "colour", "shape")


def existence_question(scene: dict, rng: random.Random, kind: str = "pair") -> dict:
    """A yes-or-no existence question (instruction data, like the POPE probes), yes half the time
    (a `colour` or `shape` question of a scene that holds every value is always yes).

    `pair` asks `Is there a <colour> <shape> in the image?`, as POPE does; an absent pair is, half
    the time, one that shares the colour or the shape of a present object (POPE's adversarial
    negatives), else any absent pair. `colour` asks `Is there a <colour> object ...?` and `shape`
    `Is there a <shape> ...?`: one word to match, the steps by which a small model learns the pair
    (a scene that holds every colour, or every shape, gets a yes). The skill is `existence` for
    pairs and `existence-<kind>` for the others.
    """
    present = [name(o) for o in scene["objects"]]
    colours = sorted({o["colour"] for o in scene["objects"]})
    shapes = sorted({o["shape"] for o in scene["objects"]})
    yes = rng.random() < 0.5
    if kind == "pair":
        absent = [f"{c} {s}" for c in sorted(COLOURS) for s in SHAPES if f"{c} {s}" not in present]
        near = [p for p in absent if p.split()[0] in colours or p.split()[1] in shapes]
        asked = rng.choice(present if yes else (near if near and rng.random() < 0.5 else absent))
        what = asked
    elif kind in ("colour", "shape"):
        values = colours if kind == "colour" else shapes
        absent = [v for v in (sorted(COLOURS) if kind == "colour" else SHAPES) if v not in values]
        yes = yes or not absent
        asked = rng.choice(values if yes else absent)
        what = f"{asked} object" if kind == "colour" else asked
    else:
        raise ValueError(f"existence kind {kind!r} is not one of {EXISTENCE_KINDS}")
    answer = "yes" if yes else "no"
    reasoning = (f"The image has {with_article(what)}, so the answer is yes." if yes else
                 f"None of the objects is {with_article(what)}, so the answer is no.")
    q = _q("existence" if kind == "pair" else f"existence-{kind}", f"Is there {with_article(what)} in the image?",
           answer, "yesno", f"decide whether there is {with_article(what)} in the image", reasoning)
    return finish_question(q, scene, rng, mc=False)


LISTING_KINDS: tuple[str, ...] = ("colours", "objects")


def listing_question(scene: dict, kind: str) -> dict:
    """A question whose answer reads every object off the image (instruction data, never evaluated):
    `colours` asks which colours the objects have (each once, sorted), `objects` lists the objects'
    names in the scene's order. The skill is `list-<kind>`.

    A small model learns such a direct reading of its image tokens within a few hundred steps, and
    once it has, it learns questions that match a word of the question against the image (is there a
    red object?) quickly, if its LM makes that match in text; taught directly, it barely learns
    those (README, Results).
    """
    objs = scene["objects"]
    phrases = join_list([with_article(name(o)) for o in objs])
    if kind == "colours":
        colours = sorted({o["colour"] for o in objs})
        q = _q("list-colours", "Which colors do the objects in the image have?", ", ".join(colours), "colours",
               "list the colors of the objects", f"The objects are {phrases}, so their colors are {join_list(colours)}.")
    elif kind == "objects":
        q = _q("list-objects", "Which objects are in the image?", ", ".join(name(o) for o in objs), "objects",
               "list the objects", f"The image shows {phrases}.")
    else:
        raise ValueError(f"listing kind {kind!r} is not one of {LISTING_KINDS}")
    return finish_question(q, scene, random.Random(0), mc=False)   # a short answer: no options to draw


def finish_question(q: dict, scene: dict, rng: random.Random, mc: bool) -> dict:
    """Add the type, the options and letter answer of a multiple-choice question, and the CoT steps."""
    short = q["answer"]
    q["short_answer"] = short
    q["type"] = "mc" if mc else "short"
    if mc:
        if q["domain"] == "yesno":
            options = ["yes", "no"]
        else:
            pool = [v for v in _domain(q["domain"], short, scene) if v != short]
            options = rng.sample(pool, k=min(3, len(pool))) + [short]
            rng.shuffle(options)
        letter = OPTION_LETTERS[options.index(short)]
        q["options"] = options
        q["answer"] = letter
        q["reasoning"] += f" The answer {short} is option {letter}."
    q["steps"] = [
        f"The question asks me to {q['task']}" + (", choosing one of the options." if mc else "."),
        visual_information(scene),
        q["reasoning"],
        q["answer"],
    ]
    return q


def question_text(q: dict) -> str:
    """The question as posed, with its options when it is multiple choice (no answer instruction)."""
    if q["type"] == "mc":
        opts = "\n".join(f"{OPTION_LETTERS[i]}. {opt}" for i, opt in enumerate(q["options"]))
        return f"{q['question']}\n{opts}"
    return q["question"]


def short_prompt(q: dict) -> str:
    """The question with the instruction for a short answer (a letter for multiple choice)."""
    instruction = MC_INSTRUCTION if q["type"] == "mc" else SHORT_ANSWER_PHRASE
    return f"{question_text(q)}\n{instruction}" if q["type"] == "mc" else f"{question_text(q)} {instruction}"


def cot_answer(q: dict) -> str:
    return format_steps(COT_HEADINGS, q["steps"])


def llava_cot_answer(q: dict) -> str:
    """The same answer in LLaVA-CoT's tagged form."""
    return "\n\n".join(f"<{tag}>{body}</{tag}>" for tag, body in zip(COT_TAGS, q["steps"]))


def text_only_questions() -> list[tuple[str, str]]:
    """A few questions about the world's shapes that need no image."""
    out = [(f"How many sides does a {shape} have?", str(n)) for shape, n in SIDES.items()]
    out += [(f"Is a {shape} round?", "yes" if shape == "circle" else "no") for shape in SHAPES]
    out += [("How many arms does a cross have?", "4")]
    return out
