"""Every text the world writes about a scene: alt-text, gold descriptions and CoD captions.

The strings of the SICOG formats (step headings and layout) come from `sicog.data.formats`; this
module only says what each step contains for a scene of the mini world. Questions and their gold
CoT answers live in `sicog.world.questions`.
"""
from __future__ import annotations

import random

from sicog.data.formats import COD_HEADINGS, format_steps
from sicog.world.scene import relation
from sicog.world.vocab import (
    BACKGROUNDS, COLOURS, POSITION_PHRASES, RELATION_PHRASES, SHAPES, SIZE_WORDS, number_word,
)

# Questions a person asks for a caption (the raw CoD annotation input and DD records).
CAPTION_QUESTIONS: tuple[str, ...] = (
    "Describe the image in detail.",
    "What do you see in this picture?",
    "Give a thorough description of the scene.",
    "Write a detailed description of this image.",
    "Explain what this image contains.",
)
# Requests for a brief caption (stage-1 alignment records).
SHORT_CAPTION_QUESTIONS: tuple[str, ...] = (
    "Give a short caption for the image.",
    "Briefly describe this picture.",
    "Write a brief caption.",
    "Summarize the image in a few words.",
)
# Requests for a detailed caption in instruction data.
DETAIL_QUESTIONS: tuple[str, ...] = (
    "Describe this image in detail.",
    "Provide a detailed description of the picture.",
    "What is in this image? Describe it thoroughly.",
)


def with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def join_list(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def name(obj: dict) -> str:
    """`red circle`: unique within its scene."""
    return f"{obj['colour']} {obj['shape']}"


def label_phrase(obj: dict) -> str:
    kind = "digit" if obj["label"].isdigit() else "letter"
    return f"marked with the {kind} {obj['label']}"


def full_phrase(obj: dict) -> str:
    """`large red circle marked with the letter K`."""
    text = f"{SIZE_WORDS[obj['size']]} {name(obj)}"
    return f"{text} {label_phrase(obj)}" if obj["label"] else text


def objects_phrase(n: int) -> str:
    return f"{number_word(n)} object" + ("" if n == 1 else "s")


def clear_relations(scene: dict, limit: int) -> list[tuple[dict, str, dict]]:
    """Up to `limit` (a, relation, b) facts between consecutive objects, where the relation is clear."""
    objs = scene["objects"]
    facts = []
    for a, b in zip(objs, objs[1:]):
        rel = relation(a, b)
        if rel:
            facts.append((a, rel, b))
        if len(facts) == limit:
            break
    return facts


def relation_sentence(a: dict, rel: str, b: dict) -> str:
    return f"the {name(a)} is {RELATION_PHRASES[rel]} the {name(b)}"


def describe(scene: dict) -> str:
    """The full description: the DD caption and step 5 of the CoD caption."""
    objs = scene["objects"]
    parts = [f"This image shows {objects_phrase(len(objs))} on a plain {scene['background']} background."]
    for obj in objs:
        parts.append(f"{cap(POSITION_PHRASES[obj['position']])} there is {with_article(full_phrase(obj))}.")
    for a, rel, b in clear_relations(scene, 3):
        parts.append(cap(relation_sentence(a, rel, b)) + ".")
    return " ".join(parts)


def _near_edge(obj: dict, scene: dict) -> bool:
    x0, y0, x1, y1 = obj["bbox"]
    mx, my = 0.08 * scene["width"], 0.08 * scene["height"]
    return x0 < mx or y0 < my or x1 > scene["width"] - mx or y1 > scene["height"] - my


def cod_steps(scene: dict) -> list[str]:
    """The five step bodies of the gold CoD caption."""
    objs = scene["objects"]
    bg = scene["background"]
    step1 = (f"The image shows {objects_phrase(len(objs))} on a {bg} background: "
             f"{join_list([with_article(name(o)) for o in objs])}.")
    attrs = []
    for o in objs:
        text = f"the {name(o)} is {SIZE_WORDS[o['size']]}"
        attrs.append(f"{text} and {label_phrase(o)}" if o["label"] else text)
    step2 = cap("; ".join(attrs)) + "."
    if not any(o["label"] for o in objs):
        step2 += " No text is printed on any object."
    places = [f"the {name(o)} is {POSITION_PHRASES[o['position']]}" for o in objs]
    rels = [relation_sentence(a, r, b) for a, r, b in clear_relations(scene, 3)]
    step3 = cap("; ".join(places + rels)) + "."
    edge = [o for o in objs if _near_edge(o, scene)]
    if edge:
        step4 = (f"Close to the edges of the image there "
                 f"{'is' if len(edge) == 1 else 'are'} {join_list([with_article(name(o)) for o in edge])}; "
                 f"the rest of the image is plain {bg} background.")
    else:
        step4 = f"No object touches the edges of the image; the rest of the image is plain {bg} background."
    return [step1, step2, step3, step4, describe(scene)]


def cod_caption(scene: dict) -> str:
    """The gold five-step Chain-of-Description caption."""
    return format_steps(COD_HEADINGS, cod_steps(scene))


def clip_caption(scene: dict, rng: random.Random) -> str:
    """A complete, short caption for contrastive pre-training: every object, in random order."""
    objs = list(scene["objects"])
    rng.shuffle(objs)
    items = []
    for o in objs:
        text = with_article(name(o))
        items.append(f"{text} with the {'digit' if o['label'].isdigit() else 'letter'} {o['label']}" if o["label"] else text)
    return f"{join_list(items)} on a {scene['background']} background"


def alt_text(scene: dict, rng: random.Random) -> str:
    """A web-style alt-text: partial and sometimes wrong (a swapped colour or shape, a wrong count)."""
    objs = scene["objects"]
    picked = rng.sample(objs, k=min(len(objs), rng.choice((1, 1, 2, 2, 3))))
    mentions = []
    for o in picked:
        colour, shape = o["colour"], o["shape"]
        if rng.random() < 0.2:
            colour = rng.choice(sorted(COLOURS))
        if rng.random() < 0.15:
            shape = rng.choice(SHAPES)
        mentions.append(f"{colour} {shape}")
    bg = scene["background"] if rng.random() > 0.1 else rng.choice(sorted(BACKGROUNDS))
    count = len(objs) if rng.random() > 0.2 else max(1, len(objs) + rng.choice((-1, 1)))
    template = rng.randrange(6)
    if template == 0:
        return join_list([with_article(m) for m in mentions])
    if template == 1:
        return f"{with_article(mentions[0])} on a {bg} background"
    if template == 2:
        return f"simple shapes: {', '.join(mentions)}"
    if template == 3:
        return f"{number_word(count)} shapes on {bg}"
    if template == 4:
        return "colorful geometric shapes" if rng.random() < 0.5 else f"geometric shapes, {mentions[0]}"
    labelled = [o for o in objs if o["label"]]
    if labelled:
        o = rng.choice(labelled)
        return f"{o['shape']} with {o['label']} on it"
    return f"{mentions[0]} clip art"
