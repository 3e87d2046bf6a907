"""The training stage scripts chained end to end on the tiny profile: stage 1 -> 1.5 -> 2."""
import pytest

from script_helpers import STAGE1, STAGE2, STAGE15, run_script
from train_fixtures import make_world, save_tiny_model


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("scripts")
    model = save_tiny_model(root / "model")
    data = make_world(root / "world", n_image=4, n_text=2, sizes=((112, 112), (98, 126)))
    return root, model, data


@pytest.mark.slow
def test_stage_scripts_chain_on_tiny_profile(world):
    root, model, data = world
    common = {"OUTPUT_ROOT": str(root / "ckpt"), "WORLD_DIR": str(root / "world"), "DATA_PATH": str(data),
              "GLOBAL_BATCH": "2"}
    r = run_script(STAGE1, {**common, "EXPERIMENT_NAME": "align", "MODEL_PATH": str(model), "PRETRAIN_BATCH": "2",
                            "PRETRAIN_LEARNING_RATE": "1e-3"}, "--max_steps", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    align = root / "ckpt" / "align"
    assert (align / "mm_projector.safetensors").is_file()
    cfg = (align / "train_config.yaml").read_text()
    assert "learning_rate: 0.001" in cfg and f"image_folder: {root / 'world'}" in cfg

    r = run_script(STAGE15, {**common, "EXPERIMENT_NAME": "pretrain", "MM_PROJECTOR_CHECKPOINT": str(align),
                             "FINETUNE_BATCH": "1", "ACCU_STEPS": "2"}, "--max_steps", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (root / "ckpt" / "pretrain" / "model.safetensors").is_file()
    assert "loaded the projector from" in r.stderr

    r = run_script(STAGE2, {**common, "EXPERIMENT_NAME": "sft", "PREV_STAGE_CHECKPOINT": str(root / "ckpt" / "pretrain"),
                            "FINETUNE_BATCH": "2"}, "--max_steps", "1")
    assert r.returncode == 0, r.stderr[-3000:]
