"""`sicog curate` under torchrun (2 CPU processes, gloo) gives the outputs of a single process."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sicog.data.formats import CAPTION_PROMPTS, COD_HEADINGS, format_steps

DESCRIPTIONS = [
    ["A large red cube sits right of a small blue ball.", "A big red cube is right of a little blue ball.",
     "Boil the pasta for nine minutes."],
    ["Three green triangles in a row on white.", "Three green triangles are lined up on a white background.",
     "Three green triangles in a row on white."],
    ["The letter K is printed on a yellow square.", "A yellow square carries the printed letter K.",
     "The market closed higher on Friday.", ""],
    ["A purple circle at the top left.", "A violet circle in the upper left corner."],
    ["Two blue cubes beside a red sphere.", "The weather will be sunny tomorrow.",
     "A red sphere next to two blue cubes.", "Two cubes, blue, and one red ball."],
]


def write_candidates(path):
    with open(path, "w", encoding="utf-8") as f:
        for k, descriptions in enumerate(DESCRIPTIONS):
            candidates = [format_steps(COD_HEADINGS, ["Objects.", "Details.", "Layout.", "Margins.", d]) if d else ""
                          for d in descriptions]
            f.write(json.dumps({"id": f"img{k}", "image": f"img/{k}.png",
                                "prompt": "<image>\n" + CAPTION_PROMPTS["cod-default"], "candidates": candidates,
                                "generation": {"task": "caption", "prompt_name": "cod-default", "model": "m",
                                               "temperature": 0.7, "top_p": 0.9, "num_beams": 1,
                                               "max_new_tokens": 64, "seed": 0, "augment": None}}) + "\n")


def curate(nproc, cands, out):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "sicog", "curate", "--candidates", str(cands), "--out", str(out), "--thresholds", "0.6,0.8",
           "--batch-size", "3", "--chunk-size", "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def read(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    cands = tmp_path / "cands.jsonl"
    write_candidates(cands)
    curate(1, cands, tmp_path / "one")
    log = curate(2, cands, tmp_path / "two")
    # The inputs are split between the ranks, not scored twice.
    assert "rank 0/2: 3 inputs to score" in log and "rank 1/2: 2 inputs to score" in log
    one, two = tmp_path / "one", tmp_path / "two"
    assert json.loads((two / "summary.json").read_text())["world_size"] == 2
    s1, s2 = read(one / "scores.jsonl"), read(two / "scores.jsonl")
    assert [r["id"] for r in s1] == [r["id"] for r in s2] == [f"img{k}" for k in range(len(DESCRIPTIONS))]
    for a, b in zip(s1, s2):
        assert a["argmax"] == b["argmax"]
        assert [x is None for x in a["scores"]] == [x is None for x in b["scores"]]
        assert [x for x in a["scores"] if x is not None] == pytest.approx(
            [x for x in b["scores"] if x is not None], abs=1e-5)
    for name in ("curated_tau0.6.jsonl", "curated_tau0.8.jsonl", "preferences.jsonl", "rejects.jsonl"):
        assert (one / name).read_text() == (two / name).read_text(), name
    assert read(one / "curated_tau0.6.jsonl")  # something was kept
    assert not (two / ".partial").exists()
