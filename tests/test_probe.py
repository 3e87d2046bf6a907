"""`sicog probe`: linear probes of tower and connector, and own-vs-shuffled answer reading."""
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, CLIPImageProcessor

from cli_helpers import sicog
from tiny_models import build_random_tiny
from sicog.cli import main as sicog_main
from sicog.data.formats import IMAGE_TOKEN, SHORT_ANSWER_PHRASE
from sicog.evaluate.linear_probes import PROBE_TARGETS, balanced_accuracy, fit_linear

BACKGROUND_Q = f"What is the background color? {SHORT_ANSWER_PHRASE}"


def _scenes(world: Path) -> list[dict]:
    return [json.loads(line) for line in (world / "world.jsonl").read_text().splitlines()]


def _train_background(model, processor, world: Path, scenes: list[dict], steps: int) -> None:
    """100 steps of "What is the background color?" on the training images (a global feature), the
    vision tower frozen and the loss on the answer only."""
    processor.mask_mode = "assistant"
    items = [processor.encode([{"from": "human", "value": f"{IMAGE_TOKEN}\n{BACKGROUND_Q}"},
                               {"from": "gpt", "value": s["background"]}],
                              image=processor.load_image(world / s["image"]))
             for s in scenes]
    opt = torch.optim.AdamW([p for n, p in model.named_parameters() if not n.startswith("model.vision_tower")], lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randperm(len(items), generator=gen)[:16].tolist()
        batch = processor.collate([items[i] for i in idx])
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    world = root / "world"
    assert sicog_main(["world", "build", "--out", str(world), "--size", "micro", "--seed", "0"]) == 0
    scenes = _scenes(world)
    # The answer reading's benchmark: one background question per eval image (a global feature).
    qa = [{"id": f"{s['id']}-bg", "image": s["image"], "question": f"{IMAGE_TOKEN}\n{BACKGROUND_Q}",
           "answer": s["background"], "skill": "background", "type": "short"}
          for s in scenes if s["split"] == "eval"]
    (world / "data/eval/qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    torch.manual_seed(0)
    model, processor = build_random_tiny(seed=0, tokenizer=AutoTokenizer.from_pretrained(world / "tokenizer"))
    untrained = root / "untrained"
    model.save_pretrained(untrained)
    processor.save_pretrained(untrained)
    train = [s for s in scenes if s["split"] in ("clip", "align", "sft")]
    _train_background(model, processor, world, train, steps=100)
    trained = root / "trained"
    model.save_pretrained(trained)
    processor.save_pretrained(trained)
    return {"root": root, "world": world, "trained": trained, "untrained": untrained, "model": model}


def _probe(setup, model: Path, name: str, capsys) -> tuple[dict, str]:
    out = setup["root"] / f"{name}.json"
    rc = sicog_main(["probe", "--model", str(model), "--world", str(setup["world"]), "--split", "eval",
                     "--n-train", "40", "--n-test", "40", "--out", str(out)])
    assert rc == 0
    return json.loads(out.read_text()), capsys.readouterr().out


def test_trained_global_feature_shows_a_gap_and_the_table_has_every_row(setup, capsys):
    result, table = _probe(setup, setup["trained"], "trained", capsys)
    for target in PROBE_TARGETS:
        assert f"| {target} |" in table
        for part in ("tower", "connector"):
            assert 0.0 <= result["probes"][part][target] <= 1.0
    for skill in ("background", "pope", "overall"):
        assert f"| {skill} |" in table
    own, shuffled = result["answers"]["own"]["background"], result["answers"]["shuffled"]["background"]
    assert own["n"] == shuffled["n"] == 24
    # the model learned to name the background: its own image helps, another image hurts
    assert own["accuracy"] - shuffled["accuracy"] >= 0.3, (own, shuffled)
    assert shuffled["loss"] > own["loss"]
    assert {g["gate"] for g in result["gates"]} >= {"tower shape", "tower colour", "tower count"}
    assert "Gates:" in table
    # background is a global feature every tower carries: the linear probe finds it
    assert result["probes"]["tower"]["background"] > result["probes"]["majority"]["background"]


def test_untrained_model_shows_no_gap(setup, capsys):
    result, _ = _probe(setup, setup["untrained"], "untrained", capsys)
    gap = result["answers"]["gap"]["background"]["accuracy"]
    assert abs(gap) < 0.2, result["answers"]


def test_vision_folder_probes_the_tower_only(setup, capsys):
    vision = setup["root"] / "clip"
    setup["model"].vision_tower.save_pretrained(vision)
    CLIPImageProcessor(image_mean=[0.48145466, 0.4578275, 0.40821073],
                       image_std=[0.26862954, 0.26130258, 0.27577711]).save_pretrained(vision)
    out = setup["root"] / "vision.json"
    assert sicog_main(["probe", "--vision", str(vision), "--world", str(setup["world"]),
                       "--n-train", "40", "--n-test", "40", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert "connector" not in result["probes"] and "answers" not in result
    assert set(result["probes"]["tower"]) == set(PROBE_TARGETS)
    assert "| count |" in capsys.readouterr().out


def test_bad_inputs_stop_with_a_message(setup, tmp_path):
    rc, err = sicog("probe", "--model", str(setup["trained"]), "--world", str(tmp_path))
    assert rc == 2 and "--world" in err and "not a built world" in err
    rc, err = sicog("probe", "--model", str(tmp_path), "--world", str(setup["world"]))
    assert rc == 2 and f"--model {tmp_path} has no config.json" in err, err
    rc, err = sicog("probe", "--model", str(setup["trained"]), "--world", str(setup["world"]), "--parts", "x")
    assert rc == 2 and "--parts: unknown ['x']" in err, err
    rc, err = sicog("probe", "--model", str(setup["trained"]), "--world", str(setup["world"]),
                    "--train-split", "nowhere", "--parts", "probes")
    assert rc == 2 and "--train-split: the world has no images in split 'nowhere'" in err, err
    rc, err = sicog("probe", "--vision", str(tmp_path), "--world", str(setup["world"]))
    assert rc == 2 and "--vision" in err and "no config.json" in err, err
    assert "Traceback" not in err


def test_linear_probe_separates_a_separable_set():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g)
    y = (x[:, :2] > 0).float()
    predict = fit_linear(x[:150], y[:150], multilabel=True)
    assert balanced_accuracy(predict(x[150:]), y[150:]) > 0.9
    classes = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    predict = fit_linear(x[:150], classes[:150], multilabel=False)
    assert float((predict(x[150:]) == classes[150:]).float().mean()) > 0.8
    # a constant feature carries nothing: chance
    assert balanced_accuracy(torch.zeros(50, 2), y[150:]) == 0.5
