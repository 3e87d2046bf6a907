"""recap_scripts/*.sh on the tiny profile (mini-world defaults) and their validation errors."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from generate_helpers import GOOD, lines, make_inputs, save_tiny_model
from sicog.data.records import read_records, write_jsonl
from sicog.generate.shard import Chunk

REPO = Path(__file__).resolve().parents[1]
RECAP = REPO / "recap_scripts" / "recap_inference.sh"
REASON = REPO / "recap_scripts" / "reasoning_inference.sh"
FAST = {"N_CANDIDATES": "2", "MAX_NEW_TOKENS": "5"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A working folder laid out as the tiny profile expects: runs/world/ and checkpoints/stage0-*."""
    root = tmp_path_factory.mktemp("scripts")
    world = root / "runs" / "world"
    questions = make_inputs(world, bad=False)
    (world / "data").mkdir()
    recs = read_records(questions)
    write_jsonl(world / "data" / "pool_questions.jsonl", recs)
    images = [{"id": f"img{i}", "image": r["image"]} for i, r in enumerate(recs)]
    write_jsonl(world / "data" / "pool_images.jsonl", images)
    save_tiny_model(root / "checkpoints" / "stage0-perception")
    (root / "checkpoints" / "stage0-reasoning").symlink_to(root / "checkpoints" / "stage0-perception")
    return root


def sh(script, root, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    full.update({"PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **env})
    return subprocess.run(["bash", str(script)], env=full, cwd=root, capture_output=True, text=True, timeout=300)


def test_recap_script_runs_the_tiny_defaults(root):
    run = sh(RECAP, root, **FAST)
    assert run.returncode == 0, run.stderr[-3000:]
    out = lines(root / "runs" / "recap-cod" / "captions.jsonl")
    assert [r["id"] for r in out] == [f"img{i}" for i in range(GOOD)]
    assert all(len(r["candidates"]) == 2 for r in out)
    assert out[0]["generation"]["prompt_name"] == "cod-default" and out[0]["generation"]["temperature"] == 0.7
    assert out[0]["prompt"].endswith("Describe the image step-by-step.")
    assert lines(root / "runs" / "recap-cod" / "captions.rejects.jsonl") == []


def test_reasoning_script_chunk_split_and_augment(root):
    run = sh(REASON, root, SPLIT="1/2", PROMPT="default", AUGMENT_METHODS="mask,color_jitter", **FAST)
    assert run.returncode == 0, run.stderr[-3000:]
    out = lines(root / "runs" / "reasoning-cot" / "reasoning.chunk1-of-2.jsonl")
    want = [f"q{i}" for i in range(GOOD) if Chunk(1, 2).contains(f"q{i}")]
    assert [r["id"] for r in out] == want and 0 < len(want) < GOOD
    assert all(r["generation"]["augment"] in ("mask", "color_jitter") for r in out)
    assert "step-by-step" not in out[0]["prompt"]


@pytest.mark.parametrize("env, message", [
    ({"MODEL_PATH": "/nonexistent/model"}, "MODEL_PATH='/nonexistent/model' is not a folder"),
    ({"TEMPERATURE": "hot"}, "TEMPERATURE='hot' must be a non-negative number"),
    ({"TOP_P": "1.5"}, "TOP_P='1.5' must be in (0, 1]"),
    ({"PROMPT": "cot-default"}, "PROMPT='cot-default' must be one of: cod-default default cod-conv"),
    ({"AUGMENT_METHODS": "mask,blur"}, "AUGMENT_METHODS: unknown method 'blur'"),
    ({"SPLIT": "2/2"}, "SPLIT='2/2': chunk i/k needs 0 <= i < k"),
    ({"SPLIT": "train"}, "SPLIT='train' names a file in DATA_PATH"),
    ({"SICOG_PROFILE": "huge"}, "SICOG_PROFILE='huge' must be one of: tiny paper"),
    ({"SICOG_PROFILE": "paper"}, "EXPERIMENT_NAME is not set"),
    ({"SICOG_PROFILE": "paper", "EXPERIMENT_NAME": "x"}, "MODEL_PATH is not set"),
    ({"BEAMS": "2"}, "N_CANDIDATES=6 must be <= BEAMS=2"),
    ({"NNODES": "2", "NODE_RANK": "2"}, "NODE_RANK=2 must be < NNODES=2"),
    ({"EXPERIMENT_NAME": "a/b"}, "EXPERIMENT_NAME='a/b' may hold only"),
    ({"MERGE_WAIT": "soon"}, "MERGE_WAIT='soon' must be a non-negative integer"),
])
def test_recap_script_validation_names_the_variable(root, env, message):
    run = sh(RECAP, root, **env)
    assert run.returncode == 2 and message in run.stderr, run.stderr


def test_reasoning_script_validation(root):
    run = sh(REASON, root, PROMPT="cod-default")
    assert run.returncode == 2 and "PROMPT='cod-default' must be one of: cot-default default" in run.stderr
    run = sh(REASON, root, DATA_PATH="runs/world/data")
    assert run.returncode == 2 and "is a folder: set SPLIT" in run.stderr


def test_launch_lines_for_torchrun_and_a_named_split(root):
    """With PYTHON=echo the scripts print the commands they would run."""
    run = sh(REASON, root, PYTHON="echo", SPLIT="pool_questions", DATA_PATH="runs/world/data", NNODES="2",
             NPROC_PER_NODE="4", NODE_RANK="0", MASTER_ADDR="10.0.0.1", MASTER_PORT="29999", SEED="3")
    assert run.returncode == 0, run.stderr
    launch, merge = [line for line in run.stdout.splitlines() if line.startswith("-m")]
    assert launch.startswith("-m torch.distributed.run --nnodes 2 --nproc_per_node 4 --node_rank 0 "
                             "--master_addr 10.0.0.1 --master_port 29999 -m sicog generate --task reasoning")
    assert "--data runs/world/data/pool_questions.jsonl" in launch and "--seed 3" in launch
    assert "--out runs/reasoning-cot/reasoning.pool_questions.jsonl" in launch
    assert merge.startswith("-m sicog merge-candidates --inputs runs/world/data/pool_questions.jsonl")
    assert "--shards runs/reasoning-cot/reasoning.pool_questions.jsonl.rank*-of-*.jsonl" in merge
    assert merge.endswith("--wait 7200")
    other_node = sh(REASON, root, PYTHON="echo", NNODES="2", NODE_RANK="1")
    assert other_node.returncode == 0 and "merge-candidates" not in other_node.stdout
