"""Stage 0 warm-up and the baseline stage 2 (straight from a stage-1 projector) through their scripts."""
import json

import pytest

from script_helpers import STAGE0, STAGE2, run_script
from train_fixtures import make_world, save_tiny_model


@pytest.mark.slow
def test_stage0_and_baseline_stage2_scripts(tmp_path):
    from tiny_models import build_random_tiny
    from sicog.train.artefacts import save_projector_artefact

    model = save_tiny_model(tmp_path / "model")
    data = make_world(tmp_path / "world", n_image=4, n_text=2, sizes=((112, 112), (98, 126)))
    common = {"OUTPUT_ROOT": str(tmp_path / "ckpt"), "WORLD_DIR": str(tmp_path / "world"), "DATA_PATH": str(data),
              "GLOBAL_BATCH": "2", "FINETUNE_BATCH": "2"}
    r = run_script(STAGE0, {**common, "EXPERIMENT_NAME": "warmup", "PREV_STAGE_CHECKPOINT": str(model)},
                   "--max_steps", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "ckpt" / "warmup" / "train_summary.json").read_text())
    assert summary["stage"] == "stage0" and summary["global_step"] == 1 and summary["samples"] == 6
    assert (tmp_path / "ckpt" / "warmup" / "model.safetensors").is_file()

    # the baseline: stage 2 from a stage-1 projector artefact on the base model it records
    donor, _ = build_random_tiny(seed=3)
    save_projector_artefact(donor.projector.state_dict(), tmp_path / "align", {"base_model": str(model)})
    r = run_script(STAGE2, {**common, "EXPERIMENT_NAME": "baseline", "MM_PROJECTOR_CHECKPOINT": str(tmp_path / "align")},
                   "--max_steps", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "loaded the projector from" in r.stderr and f"model_name_or_path from the projector artefact: {model}" in r.stderr
    assert (tmp_path / "ckpt" / "baseline" / "model.safetensors").is_file()
    both = run_script(STAGE2, {**common, "EXPERIMENT_NAME": "x", "MM_PROJECTOR_CHECKPOINT": str(tmp_path / "align"),
                               "PREV_STAGE_CHECKPOINT": str(model)})
    assert both.returncode == 2 and "not both" in both.stderr
