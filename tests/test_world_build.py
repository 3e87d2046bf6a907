"""The mini world build: determinism, disjoint splits, gold texts that read back to their scenes."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from sicog.cli import main as sicog_main
from sicog.data import formats
from sicog.data.records import read_records
from sicog.evaluate.judge import judge_answer, judge_caption
from sicog.world.build import build_world
from sicog.world.parse import parse_caption
from sicog.world.questions import SKILLS, listing_question, short_prompt
from sicog.world.vocab import COLOURS


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world") / "micro"
    assert sicog_main(["world", "build", "--out", str(out), "--size", "micro", "--seed", "3"]) == 0
    return out


def scenes_of(world: Path) -> dict[str, dict]:
    return {s["id"]: s for s in read_records(world / "world.jsonl")}


def test_same_seed_gives_identical_bytes_and_other_seed_differs(world, tmp_path, capsys):
    again = build_world(tmp_path / "again", "micro", 3)
    first = json.loads((world / "manifest.json").read_text())
    assert again == first
    assert len(first["files"]) > 300
    other = build_world(tmp_path / "other", "micro", 4)
    assert other["files"]["world.jsonl"] != first["files"]["world.jsonl"]
    # every file listed exists with the stated hash; the table was printed by the CLI
    assert set(first["files"]) == {p.relative_to(world).as_posix() for p in world.rglob("*")
                                   if p.is_file() and p.name != "manifest.json"}


def test_rebuilding_a_world_in_place_leaves_no_stale_files(tmp_path):
    build_world(tmp_path / "w", "micro", 0)
    (tmp_path / "w/images/eval/stale.png").write_bytes(b"old")
    manifest = build_world(tmp_path / "w", "micro", 5)
    on_disk = {p.relative_to(tmp_path / "w").as_posix() for p in (tmp_path / "w").rglob("*") if p.is_file()}
    assert on_disk == set(manifest["files"]) | {"manifest.json"}


def test_build_refuses_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not empty"):
        build_world(tmp_path, "micro", 0)
    assert (tmp_path / "notes.txt").read_text() == "mine"


SPLIT_FILES = {
    "clip": ["clip_pretrain.jsonl"],
    "align": ["align.jsonl"],
    "cod_seed": ["cod_seed.jsonl", "dd_seed.jsonl", "cod_seed_raw.jsonl"],
    "cot_seed": ["cot_seed.jsonl", "cot_short_seed.jsonl", "llava_cot_seed.json"],
    "sft": ["sft.jsonl"],
    "pool": ["pool_images.jsonl", "pool_questions.jsonl", "pool_gold/cod.jsonl", "pool_gold/dd.jsonl",
             "pool_gold/cot.jsonl", "pool_gold/cot_short.jsonl"],
    "val": ["val/qa.jsonl", "val/pope.jsonl", "val/captions.jsonl"],
    "eval": ["eval/qa.jsonl", "eval/pope.jsonl", "eval/captions.jsonl"],
}


def test_splits_are_disjoint_by_image_and_images_exist(world):
    scenes = scenes_of(world)
    owner: dict[str, str] = {}
    for split, files in SPLIT_FILES.items():
        for name in files:
            records = read_records(world / "data" / name)
            assert records, name
            for rec in records:
                if "image" not in rec:
                    assert split == "sft" and rec["id"].startswith("sft-text-")
                    continue
                assert (world / rec["image"]).is_file()
                assert owner.setdefault(rec["image"], split) == split, f"{rec['image']} in {split} and {owner[rec['image']]}"
                assert scenes[Path(rec["image"]).stem]["split"] == split
    assert sum(1 for s in scenes.values() if s["image"] in owner) == len(scenes)


def test_rendered_pixels_match_the_scene_graph(world):
    scenes = list(scenes_of(world).values())
    areas = []
    for scene in scenes[:60]:
        img = Image.open(world / scene["image"]).convert("RGB")
        assert img.size == (scene["width"], scene["height"])
        areas.append(scene["width"] * scene["height"] / 112**2)
        beside = json.loads((world / scene["image"]).with_suffix(".json").read_text())
        assert beside == {k: v for k, v in scene.items() if k != "questions"}
        for obj in scene["objects"]:
            if obj["label"]:
                continue
            cx, cy = (int(v) for v in obj["center"])
            assert img.getpixel((cx, cy)) == COLOURS[obj["colour"]], (scene["id"], obj)
    # most images are about the tiny scale (unsliced), some are large or elongated (sliced)
    assert any(a <= 1.0 for a in areas) and any(a > 1.0 for a in areas)
    counts = Counter(len(s["objects"]) for s in scenes)
    assert min(counts) >= 1 and max(counts) <= 6 and len(counts) >= 4


def same_objects(text: str, scene: dict) -> bool:
    parsed = parse_caption(text)["objects"]
    gold = {f"{o['colour']} {o['shape']}": (o["size"], o["label"]) for o in scene["objects"]}
    return {k: (v["size"], v["label"]) for k, v in parsed.items()} == gold


def test_gold_captions_read_back_to_their_scenes(world):
    scenes = scenes_of(world)
    cod = read_records(world / "data/cod_seed.jsonl")
    dd = {r["id"]: r for r in read_records(world / "data/dd_seed.jsonl")}
    raw = {r["id"]: r for r in read_records(world / "data/cod_seed_raw.jsonl")}
    for rec in cod + read_records(world / "data/pool_gold/cod.jsonl"):
        human, answer = rec["conversations"][0]["value"], rec["conversations"][1]["value"]
        assert formats.check_steps(answer, formats.COD_HEADINGS) is None
        body = formats.cod_to_dd(answer)
        scene = scenes[rec["id"]]
        assert same_objects(body, scene)
        assert parse_caption(body)["count"] == len(scene["objects"])
        assert judge_caption(answer, scene)["correct"]
        assert human.startswith(formats.IMAGE_TOKEN + "\n")
    for rec in cod:
        assert rec["conversations"][0]["value"].endswith(formats.COD_ANNOTATION_SUFFIX)
        assert dd[rec["id"]]["conversations"][1]["value"] == formats.cod_to_dd(rec["conversations"][1]["value"])
        assert raw[rec["id"]]["image"] == rec["image"] and raw[rec["id"]]["caption"]
        assert len(raw[rec["id"]]["conversations"]) == 1


def test_gold_cot_answers_conclude_with_the_qa_answer(world):
    scenes = scenes_of(world)
    gold = {q["id"]: q for s in scenes.values() for q in s.get("questions", [])}
    short = {r["id"]: r for r in read_records(world / "data/cot_short_seed.jsonl")}
    tagged = {r["id"]: r for r in read_records(world / "data/llava_cot_seed.json")}
    for rec in read_records(world / "data/cot_seed.jsonl"):
        q, a = (t["value"] for t in rec["conversations"])
        assert formats.check_steps(a, formats.COT_HEADINGS) is None
        assert q.endswith(formats.STEP_BY_STEP_PHRASE) and formats.SHORT_ANSWER_PHRASE not in q
        assert formats.step_body(a, 4) == gold[rec["id"]]["answer"] == short[rec["id"]]["conversations"][1]["value"]
        assert judge_answer(a, gold[rec["id"]])
        tagged_answer = tagged[rec["id"]]["conversations"][1]["value"]
        for tag in formats.COT_TAGS:
            assert tagged_answer.count(f"<{tag}>") == 1 and tagged_answer.count(f"</{tag}>") == 1
        assert formats.to_step_by_step_question(tagged[rec["id"]]["conversations"][0]["value"]) == q
    pool_q = read_records(world / "data/pool_questions.jsonl")
    pool_gold = {r["id"]: r for r in read_records(world / "data/pool_gold/cot.jsonl")}
    for rec in pool_q:
        assert len(rec["conversations"]) == 1 and "answer" not in rec
        assert formats.generation_prompt(rec, "reasoning", "cot-default") == rec["conversations"][0]["value"]
        assert rec["conversations"][0]["value"].endswith(" " + formats.STEP_BY_STEP_PHRASE)
        g = pool_gold[rec["id"]]
        assert judge_answer(g["conversations"][1]["value"], g)
        assert not judge_answer(formats.format_steps(formats.COT_HEADINGS, ["x", "y", "z", "wrong answer"]), g)


def test_benchmarks_have_every_skill_balanced_pope_and_caption_scenes(world):
    scenes = scenes_of(world)
    qa = read_records(world / "data/eval/qa.jsonl")
    assert {r["skill"] for r in qa} == set(SKILLS)
    assert {r["type"] for r in qa} == {"mc", "short"}
    for r in qa:
        assert r["question"].startswith(formats.IMAGE_TOKEN + "\n")
        if r["type"] == "mc":
            assert r["answer"] in "ABCD"[: len(r["options"])]
    pope = read_records(world / "data/eval/pope.jsonl")
    for variant in ("random", "popular", "adversarial"):
        answers = Counter(r["answer"] for r in pope if r["variant"] == variant)
        assert answers["yes"] == answers["no"] > 0
    for r in pope:
        present = {f"{o['colour']} {o['shape']}" for o in scenes[Path(r["image"]).stem]["objects"]}
        assert (r["object"] in present) == (r["answer"] == "yes")
    for r in read_records(world / "data/eval/captions.jsonl"):
        assert r["scene"]["objects"] == scenes[r["scene_id"]]["objects"]
    sft = read_records(world / "data/sft.jsonl")
    assert any(len(r["conversations"]) > 2 for r in sft) and any("image" not in r for r in sft)
    kinds = Counter()
    for r in sft:  # existence questions (as the POPE probes ask, or of one word) answered from the scene graph
        if r.get("image") and r["conversations"][0]["value"].startswith("<image>\nIs there "):
            asked = r["conversations"][0]["value"].split("Is there ", 1)[1].split(" in the image")[0].split(" ", 1)[1]
            objects = scenes[Path(r["image"]).stem]["objects"]
            if asked.endswith(" object"):
                kinds["colour"] += 1
                present = {o["colour"] + " object" for o in objects}
            elif " " in asked:
                kinds["pair"] += 1
                present = {f"{o['colour']} {o['shape']}" for o in objects}
            else:
                kinds["shape"] += 1
                present = {o["shape"] for o in objects}
            assert r["conversations"][1]["value"] == ("yes" if asked in present else "no")
    # one single-question conversation of each kind per image, besides the pair questions inside conversations
    n_images = sum(1 for r in sft if r.get("image"))
    assert kinds["colour"] == kinds["shape"] > 0 and kinds["pair"] >= kinds["colour"]
    assert sum(1 for r in sft if r["id"].endswith("-exists-colour")) == kinds["colour"] == n_images // 6
    # and one listing conversation of each kind: its colours (sorted, once each), its objects in scene order
    listed = Counter()
    for r in (r for r in sft if "-list-" in r["id"]):
        kind = r["id"].rsplit("-list-", 1)[1]
        listed[kind] += 1
        objects = scenes[Path(r["image"]).stem]["objects"]
        question, answer = r["conversations"][0]["value"], r["conversations"][1]["value"]
        assert question.startswith("<image>\n") and question.endswith(formats.SHORT_ANSWER_PHRASE)
        if kind == "colours":
            assert answer == ", ".join(sorted({o["colour"] for o in objects}))
        else:
            assert answer == ", ".join(f"{o['colour']} {o['shape']}" for o in objects)
    assert listed == {"colours": n_images // 6, "objects": n_images // 6}
    # sft_listing.jsonl holds exactly those records, in the same order (stage 2 trains them first)
    alone = read_records(world / "data/sft_listing.jsonl")
    assert alone == [r for r in sft if "-list-" in r["id"]]


def test_listing_questions_by_hand():
    scene = {"objects": [dict(colour=c, shape=s, size="small", label=None, position=p) for c, s, p in
                         (("red", "square", "top left"), ("blue", "circle", "center"), ("red", "cross", "bottom"))]}
    colours, objects = listing_question(scene, "colours"), listing_question(scene, "objects")
    assert short_prompt(colours) == f"Which colors do the objects in the image have? {formats.SHORT_ANSWER_PHRASE}"
    assert (colours["skill"], colours["answer"], colours["type"]) == ("list-colours", "blue, red", "short")
    assert (objects["skill"], objects["answer"]) == ("list-objects", "red square, blue circle, red cross")
    assert objects["steps"][-1] == objects["answer"]
    with pytest.raises(ValueError, match="listing kind 'shapes' is not one of"):
        listing_question(scene, "shapes")


def test_tokenizer_round_trip_with_chat_template(world):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(world / "tokenizer")
    messages = [{"role": "user", "content": "<image>\nHow many circles are there?"}, {"role": "assistant", "content": "2"}]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n"
                    "How many circles are there?<|im_end|>\n<|im_start|>assistant\n2<|im_end|>\n")
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<image>"):
        assert len(tok(special)["input_ids"]) == 1
    heading_ids = tok(formats.COD_HEADINGS[0])["input_ids"]
    assert len(heading_ids) < len(formats.COD_HEADINGS[0]) / 3  # trained merges: about a token per word
    assert tok.decode(tok("Ünïcode ✓ 7")["input_ids"]) == "Ünïcode ✓ 7"


def test_rendering_uses_the_bitmap_font_and_is_repeatable():
    from PIL import ImageFont

    from sicog.world import render
    from sicog.world.scene import sample_scene

    assert type(render._font()) is ImageFont.ImageFont  # PIL's built-in bitmap font, not a FreeType face
    labelled = next(s for s in (sample_scene(9, "t", i) for i in range(50)) if any(o["label"] for o in s["objects"]))
    first = render.png_bytes(render.render_scene(labelled))
    assert first == render.png_bytes(render.render_scene(sample_scene(9, "t", int(labelled["id"][-5:]))))
    # the label is drawn: the object's pixels are not all its fill colour
    obj = next(o for o in labelled["objects"] if o["label"])
    img = render.render_scene(labelled)
    x0, y0, x1, y1 = obj["bbox"]
    inner = img.crop((x0 + (x1 - x0) // 4, y0 + (y1 - y0) // 4, x1 - (x1 - x0) // 4, y1 - (y1 - y0) // 4))
    assert len(inner.getcolors(maxcolors=4096)) > 1
