"""`sicog world pretrain` on the micro world: loadable CLIP vision and Qwen2 folders, losses that fall."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from sicog.cli import main as sicog_main
from sicog.world.build import build_world


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("pretrain")
    build_world(root / "world", "micro", 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest on a shared machine
    try:
        rc = sicog_main(["world", "pretrain", "--world", str(root / "world"), "--out", str(root / "out"),
                         "--clip-steps", "8", "--lm-steps", "8", "--clip-batch", "16", "--lm-batch", "4",
                         "--lm-block", "64", "--instruct-steps", "8", "--instruct-easy-steps", "3",
                         "--instruct-focus-steps", "4", "--instruct-focus-batch", "4"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    return root


def test_folders_load_as_clip_vision_and_qwen2(pretrained):
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPVisionModel, Qwen2ForCausalLM

    out = pretrained / "out"
    assert (out / "clip/model.safetensors").is_file() and (out / "llm/model.safetensors").is_file()
    vision = CLIPVisionModel.from_pretrained(out / "clip")
    assert vision.config.image_size == 112 and vision.config.patch_size == 14
    proc = CLIPImageProcessor.from_pretrained(out / "clip")
    assert proc.crop_size == {"height": 112, "width": 112} and len(proc.image_mean) == 3
    pixels = proc(images=[Image.new("RGB", (150, 90))], return_tensors="pt")
    assert vision(**pixels).last_hidden_state.shape == (1, 65, 96)

    llm = Qwen2ForCausalLM.from_pretrained(out / "llm")
    tok = AutoTokenizer.from_pretrained(out / "llm")
    assert llm.config.vocab_size == len(tok)
    assert llm.config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert llm.config.hidden_size == 192 and llm.config.num_hidden_layers == 4
    ids = tok.apply_chat_template([{"role": "user", "content": "How many circles?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    out_ids = llm.generate(ids, max_new_tokens=4, do_sample=False)
    assert out_ids.shape[1] > ids.shape[1]


def test_losses_fall_and_the_report_holds_before_and_after(pretrained):
    from sicog.world.pretrain_instruct import EASY_PASS

    report = json.loads((pretrained / "out/pretrain_report.json").read_text())
    for part in ("clip", "lm"):
        losses = report[part]["losses"]
        assert len(losses) == 8
        assert sum(losses[-3:]) / 3 < losses[0], (part, losses)
    lm = report["lm"]
    assert lm["perplexity_after"] < lm["perplexity_before"]
    instruct = lm["instruct"]
    assert instruct["steps"] == 8 and instruct["easy_steps"] == 3 and instruct["focus_steps"] == 4
    assert instruct["focus_batch"] == 4 and len(instruct["losses"]) == 15
    assert instruct["conversations"] > instruct["single_question_conversations"] > 0 and instruct["easy_conversations"] > 0
    # the easy part is tried again (at most easy_tries times) until its held-out questions reach EASY_PASS
    attempts = instruct["easy_attempts"]
    assert 1 <= len(attempts) <= instruct["easy_tries"] == 4 and [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
    assert all(a["held_out_easy_accuracy"] < EASY_PASS for a in attempts[:-1]) and all(0 <= a["held_out_easy_accuracy"] <= 1 for a in attempts)
    assert sum(a["kept"] for a in attempts) == 1
    assert instruct["lr"] == 3e-4 and instruct["focus_share"] == 0.75
    by_skill = instruct["accuracy_by_skill_after"]
    assert "existence" in by_skill and all(0.0 <= v <= 1.0 for v in by_skill.values())
    curve = instruct["accuracy_curve"]
    assert [point["step"] for point in curve] == [0, 8, 11, 15]   # before training and at the end of each part
    assert curve[0] == instruct["in_context_accuracy_before"] and curve[-1] == instruct["in_context_accuracy_after"]
    held = instruct["held_out_conversations"]
    assert set(held) <= {"names", "description"} and sum(held.values()) > 0
    for point in curve:
        assert set(point) == {"step", *held} and all(0.0 <= point[kind] <= 1.0 for kind in held)
    assert report["clip"]["shape_loss"] == 1.0
    for key in ("retrieval_before", "retrieval_after"):
        r = report["clip"][key]
        assert 0.0 <= r["image_to_text"] <= 1.0 and r["n"] >= 2 and r["chance"] == 1 / r["n"]


def test_missing_world_is_a_clear_error(tmp_path, capsys):
    rc = sicog_main(["world", "pretrain", "--world", str(tmp_path), "--out", str(tmp_path / "o"), "--steps", "1"])
    assert rc == 2 and "--world" in capsys.readouterr().err and not (tmp_path / "o").exists()
    from sicog.world.pretrain import pretrain

    with pytest.raises(FileNotFoundError, match="build the world first"):  # the function checks too
        pretrain(tmp_path, tmp_path / "o", clip_steps=1, lm_steps=1)


def test_patch_labels_name_the_shape_under_each_patch(pretrained):
    from sicog.world.pretrain_clip import patch_labels
    from sicog.world.vocab import SHAPES

    world = pretrained / "world"
    records = [json.loads(line) for line in (world / "data/clip_pretrain.jsonl").read_text().splitlines()][:6]
    labels = patch_labels(world, records, side=112, patch=14)
    assert labels.shape == (6, 64)
    for rec, row in zip(records, labels):
        scene = json.loads((world / rec["image"]).with_suffix(".json").read_text())
        for obj in scene["objects"]:
            col = int(obj["center"][0] / scene["width"] * 8)
            row_i = int(obj["center"][1] / scene["height"] * 8)
            # the object's centre lies inside every shape, so its patch carries the object's shape
            assert row[row_i * 8 + col] == 1 + SHAPES.index(obj["shape"]), (scene["id"], obj)
        assert set(row.tolist()) <= {0} | {1 + SHAPES.index(o["shape"]) for o in scene["objects"]}
        assert (row == 0).any()  # some background in every scene


def test_in_context_accuracy_counts_whole_answers():
    import torch

    from sicog.world.pretrain_instruct import in_context_accuracy

    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    labels = torch.tensor([[-100, -100, 3, 4, -100, 6]])   # two answers: [3, 4] and [6]

    class Echo(torch.nn.Module):
        """Predicts at position i the token at i + 1, except where told to be wrong."""
        def __init__(self, wrong=()):
            super().__init__()
            self.wrong = set(wrong)

        def forward(self, input_ids, attention_mask):
            logits = torch.zeros(1, 6, 10)
            for i in range(5):
                logits[0, i, 9 if i in self.wrong else int(input_ids[0, i + 1])] = 1.0
            return type("Out", (), {"logits": logits})()

    mask = torch.ones_like(ids)
    assert in_context_accuracy(Echo(), ids, mask, labels) == 1.0
    assert in_context_accuracy(Echo(wrong={2}), ids, mask, labels) == 0.5   # one token of the first answer
    assert in_context_accuracy(Echo(wrong={1, 4}), ids, mask, labels) == 0.0


def test_instruction_conversations_mix_name_lists_and_descriptions(pretrained):
    """Each `clip` scene gives several six-question conversations, several single existence
    questions, each with its kind, answer and context drawn afresh, and the easy part's single colour
    existence questions on the object names; contexts are the object names or the full description,
    and the questions are answered from that context."""
    from sicog.world.build import LM_CHAT_PER_SCENE, LM_EASY_EXISTENCE_PER_SCENE, LM_EXISTENCE_PER_SCENE
    from sicog.world.pretrain_instruct import is_easy
    from sicog.world.texts import describe, name

    world = pretrained / "world"
    scenes = {s["id"]: s for s in map(json.loads, (world / "world.jsonl").read_text().splitlines()) if s["split"] == "clip"}
    recs = [json.loads(line) for line in (world / "data/lm_chat.jsonl").read_text().splitlines()]
    single = [r for r in recs if "-chat-exists-" in r["id"]]
    easy = [r for r in recs if is_easy(r)]
    assert len(recs) - len(single) - len(easy) == LM_CHAT_PER_SCENE * len(scenes)
    assert len(single) == LM_EXISTENCE_PER_SCENE * len(scenes) and len(easy) == LM_EASY_EXISTENCE_PER_SCENE * len(scenes)
    assert {r["skills"][0] for r in easy} == {"existence-colour"} and {r["context"] for r in easy} == {"names"}
    assert not any(map(is_easy, single))
    assert sorted({r["skills"][0] for r in single}) == ["existence", "existence-colour", "existence-shape"]
    yes_rate = sum(r["conversations"][1]["value"] == "yes" for r in single) / len(single)
    assert 0.35 < yes_rate < 0.75, yes_rate   # yes half the time, more where every colour is present
    per_scene = {}
    for rec in single:   # not one fixed question per scene: the draws differ within a scene
        per_scene.setdefault(rec["id"].rsplit("-chat", 1)[0], set()).add(rec["conversations"][0]["value"])
    assert sum(len(qs) > 1 for qs in per_scene.values()) > 0.8 * len(per_scene)
    for rec in single + easy:   # yes exactly when the scene has what is asked
        objects = scenes[rec["id"].rsplit("-chat", 1)[0]]["objects"]
        asked = rec["conversations"][0]["value"].split("Is there ", 1)[1].split(" in the image")[0].split(" ", 1)[1]
        present = {"existence": {f"{o['colour']} {o['shape']}" for o in objects},
                   "existence-colour": {o["colour"] + " object" for o in objects},
                   "existence-shape": {o["shape"] for o in objects}}[rec["skills"][0]]
        assert len(rec["skills"]) == 1 and rec["conversations"][1]["value"] == ("yes" if asked in present else "no")
    assert {r["context"] for r in recs} == {"names", "description"}
    for rec in recs:
        scene = scenes[rec["id"].rsplit("-chat", 1)[0]]
        first = rec["conversations"][0]["value"]
        context = ", ".join(name(o) for o in scene["objects"]) if rec["context"] == "names" else describe(scene)
        assert first.startswith(context + "\n") and "<image>" not in first
        assert [t["from"] for t in rec["conversations"]] == ["human", "gpt"] * len(rec["skills"])


def test_answer_hits_and_accuracy_by_skill_worked_by_hand():
    """Per answer hits of a fixed model, and the by-skill accuracy of fixed hits (the report's values)."""
    import torch

    from sicog.world.pretrain_instruct import accuracy_by_skill, answer_hits

    ids = torch.tensor([[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]])
    labels = torch.tensor([[-100, -100, 3, 4, -100, 6],     # answers [3, 4] and [6]
                           [-100, 5, -100, -100, -100, -100]])  # one answer: [5]

    class Wrong(torch.nn.Module):
        """Predicts the next token, except once in row 0."""
        def forward(self, input_ids, attention_mask):
            logits = torch.zeros(*input_ids.shape, 10)
            logits[:, :-1].scatter_(-1, input_ids[:, 1:, None], 1.0)
            logits[0, 2] = 0.0
            logits[0, 2, 9] = 1.0    # position 2 predicts token 4, the second of answer [3, 4]: missed
            return type("Out", (), {"logits": logits})()

    hits = answer_hits(Wrong(), ids, torch.ones_like(ids), labels, batch_size=1)
    assert hits == [[False, True], [True]]
    records = [{"skills": ["existence", "count"]}, {"skills": ["count"]}, {"skills": []}]
    assert accuracy_by_skill(records, [*hits, []]) == {"count": 1.0, "existence": 0.0}
    assert accuracy_by_skill(records, [[True, False], [True], []]) == {"count": 0.5, "existence": 1.0}
    assert accuracy_by_skill([{"skills": ["a"] * 3}], [[True, False, False]]) == {"a": 0.3333}


def test_clip_retrieval_worked_by_hand():
    """Top-1 matching both ways on fixed image-text logits."""
    import torch

    from sicog.world.pretrain_clip import clip_retrieval

    # image 0 -> text 0 (right), image 1 -> text 2 (wrong), image 2 -> text 2 (right);
    # text 0 -> image 0 (right), text 1 -> image 0 (wrong), text 2 -> image 1 (wrong)
    logits = torch.tensor([[5.0, 4.0, 1.0], [0.0, 1.0, 6.0], [0.0, 2.0, 3.0]])

    class Fixed(torch.nn.Module):
        def forward(self, input_ids, attention_mask, pixel_values):
            assert pixel_values.shape == (3, 3, 2, 2)
            return type("Out", (), {"logits_per_image": logits})()

    images = torch.zeros(3, 3, 2, 2, dtype=torch.uint8)
    ids = torch.zeros(3, 4, dtype=torch.long)
    result = clip_retrieval(Fixed(), images, ids, torch.ones_like(ids))
    assert result == {"image_to_text": pytest.approx(2 / 3), "text_to_image": pytest.approx(1 / 3), "n": 3,
                      "chance": pytest.approx(1 / 3)}


def test_focus_batches_draw_the_share_from_single_questions():
    import torch

    from sicog.world.pretrain_instruct import focus_batches

    single, multi = list(range(0, 10)), list(range(10, 30))
    batches = focus_batches(single, multi, 8, 0.75, torch.Generator().manual_seed(0), lambda idx: idx.tolist())
    seen = []
    for _ in range(5):
        idx = next(batches)
        assert len(idx) == 8 and sum(i < 10 for i in idx) == 6   # round(0.75 * 8) single-question rows
        seen += [i for i in idx if i < 10]
    assert set(seen) == set(single)   # 30 draws walk whole fresh orders of the 10: every one is used
    only_single = focus_batches(single, [], 4, 0.5, torch.Generator().manual_seed(0), lambda idx: idx.tolist())
    assert all(i < 10 for i in next(only_single))   # no multi-question rows: the batch is all single
    with pytest.raises(ValueError, match="no conversations"):   # an empty pool is an error, not an endless loop
        next(focus_batches([], [], 4, 0.5, torch.Generator().manual_seed(0), lambda idx: idx.tolist()))


def test_plan_rejects_bad_settings_and_a_world_without_single_questions(tmp_path, capsys):
    from sicog.world.pretrain_instruct import InstructPlan, check_focus_data, is_easy

    with pytest.raises(ValueError, match="focus_share"):
        InstructPlan(focus_share=1.5)
    with pytest.raises(ValueError, match="at least"):
        InstructPlan(focus_batch=0)
    multi_only = [{"skills": ["count", "colour"]}]
    with pytest.raises(ValueError, match="no single-question conversations"):
        check_focus_data(multi_only, InstructPlan(), tmp_path / "lm_chat.jsonl")
    with pytest.raises(ValueError, match="no easy conversations"):
        check_focus_data(multi_only + [{"skills": ["existence"]}], InstructPlan(), tmp_path / "lm_chat.jsonl")
    check_focus_data(multi_only, InstructPlan(easy_steps=0, focus_steps=0), tmp_path / "lm_chat.jsonl")   # fine

    world = tmp_path / "world"
    build_world(world, "micro", 2)
    chat = world / "data/lm_chat.jsonl"
    lines = chat.read_text().splitlines()
    chat.write_text("\n".join(line for line in lines if not is_easy(json.loads(line))) + "\n")
    args = ["world", "pretrain", "--world", str(world), "--out", str(tmp_path / "o"), "--steps", "1"]
    assert sicog_main(args) == 2   # as a world built before the easy part
    assert "no easy conversations" in capsys.readouterr().err and not (tmp_path / "o").exists()
    kept = [line for line in lines if len(json.loads(line)["skills"]) > 1]
    chat.write_text("\n".join(kept) + "\n")   # as a world built before the single questions
    assert sicog_main(args) == 2
    assert "no single-question conversations" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert sicog_main(args + ["--instruct-focus-share", "2"]) == 2
    assert "--instruct-focus-share 2" in capsys.readouterr().err


def test_best_attempt_retries_until_the_score_passes_and_keeps_the_best_weights():
    import torch

    from sicog.world.pretrain_instruct import best_attempt

    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    scores = {1: 0.1, 2: 0.5, 3: 0.3, 4: 0.9}
    starts = []

    def attempt(k):   # each attempt starts from the weights the model had before the first
        starts.append(float(model.weight.detach()))
        with torch.no_grad():
            model.weight.fill_(k)
        return [float(k)]

    def score():
        return scores[int(model.weight.detach())]

    rows = best_attempt(model, 3, attempt, score, pass_at=0.8)   # none passes: the best (2) is kept
    assert starts == [0.0, 0.0, 0.0] and float(model.weight.detach()) == 2.0
    assert [(r["attempt"], r["score"], r["kept"]) for r in rows] == [(1, 0.1, False), (2, 0.5, True), (3, 0.3, False)]
    torch.nn.init.zeros_(model.weight)
    rows = best_attempt(model, 3, attempt, score, pass_at=0.4)   # attempt 2 passes: no third
    assert len(rows) == 2 and float(model.weight.detach()) == 2.0 and rows[1]["losses"] == [2.0]


def test_length_groups_partition_the_batch_and_the_loss_equals_one_padded_batch():
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from sicog.world.pretrain_instruct import grouped_loss, length_groups

    gen = torch.Generator().manual_seed(0)
    for _ in range(50):   # property: a partition, every row fits its group's width, never more padding
        lengths = torch.randint(1, 40, (30,), generator=gen)
        idx = torch.randperm(30, generator=gen)[: int(torch.randint(1, 30, (1,), generator=gen))]
        groups = length_groups(idx, lengths)
        assert 1 <= len(groups) <= 2
        assert sorted(torch.cat([g for g, _ in groups]).tolist()) == sorted(idx.tolist())
        assert all(int(lengths[g].max()) == width for g, width in groups)
        assert sum(len(g) * width for g, width in groups) <= len(idx) * int(lengths[idx].max())
    lengths = torch.tensor([5, 50, 6, 48, 7])
    assert [sorted(g.tolist()) for g, _ in length_groups(torch.arange(5), lengths)] == [[0, 2, 4], [1, 3]]

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    rows, width = [4, 12, 5, 11], 12
    ids = torch.randint(1, 50, (4, width), generator=gen)
    mask = (torch.arange(width)[None] < torch.tensor(rows)[:, None]).long()
    labels = torch.where(mask.bool() & (torch.arange(width)[None] >= 2), ids, torch.tensor(-100))

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    whole = grads(model(input_ids=ids, attention_mask=mask, labels=labels).loss)
    split = [{"input_ids": ids[g, :w], "attention_mask": mask[g, :w], "labels": labels[g, :w]}
             for g, w in length_groups(torch.arange(4), mask.sum(1))]
    assert len(split) == 2
    assert torch.allclose(grads(grouped_loss(model, split)), whole, atol=1e-6)
