"""Two processes through torchrun (CPU, gloo): the batches are sharded, one epoch is seen once."""
import json

import pytest

from script_helpers import STAGE1, free_port, run_script
from train_fixtures import make_world, save_tiny_model



def _summary(out):
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    return log, json.loads((out / "train_summary.json").read_text())


@pytest.mark.slow
def test_two_process_stage1_matches_one_process_epoch(tmp_path):
    model = save_tiny_model(tmp_path / "model")
    data = make_world(tmp_path / "world", n_image=12, n_text=3, sizes=((112, 112), (98, 126)))
    common = {"OUTPUT_ROOT": str(tmp_path / "ckpt"), "WORLD_DIR": str(tmp_path / "world"), "DATA_PATH": str(data),
              "MODEL_PATH": str(model), "GLOBAL_BATCH": "4", "RESUME": "none"}
    r = run_script(STAGE1, {**common, "EXPERIMENT_NAME": "one", "PRETRAIN_BATCH": "4"})
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_script(STAGE1, {**common, "EXPERIMENT_NAME": "two", "PRETRAIN_BATCH": "2", "NPROC_PER_NODE": "2",
                            "MASTER_PORT": str(free_port())}, "--gradient_checkpointing", "true")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 per device x 2 ranks x 1 accumulation" in r.stderr
    log1, sum1 = _summary(tmp_path / "ckpt" / "one")
    log2, sum2 = _summary(tmp_path / "ckpt" / "two")
    # text-only records cannot train a projector-only stage: dropped with a reason
    assert sum1["samples"] == sum2["samples"] == 12 and sum1["records"] == 15
    rejects = [json.loads(x) for x in (tmp_path / "ckpt" / "two" / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 3 and all(x["reason"].startswith("text-only") for x in rejects)
    # one log line per step (written by rank 0 only), and the epoch's tokens counted once over both ranks
    steps2 = [x["step"] for x in log2 if "loss" in x]
    assert steps2 == [1, 2, 3] == [x["step"] for x in log1 if "loss" in x]
    assert sum2["metrics"]["num_input_tokens_seen"] == sum1["metrics"]["num_input_tokens_seen"]
