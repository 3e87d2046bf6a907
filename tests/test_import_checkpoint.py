"""`sicog import-checkpoint --from authors`: a tiny checkpoint in the authors' layout, imported and used."""
import json
import shutil

import pytest
import torch
from authors_fixtures import AUTHORS, load_json
from PIL import Image
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import CLIPVisionConfig, PreTrainedTokenizerFast

from sicog.cli import main
from sicog.model import SicogForConditionalGeneration, SicogProcessor

CFG = load_json("model/config.json")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]      # no <image>: the importer adds it


def _tokenizer(out):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["What shapes are in the image? A red square and a blue circle."] * 4,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.save_pretrained(str(out))
    return len(fast)


@pytest.fixture()
def authors_dir(tmp_path):
    """Their checkpoint folder: LLaVA-Qwen config.json, bf16 safetensors, a tokenizer; and a CLIP config folder."""
    src = tmp_path / "theirs"
    src.mkdir()
    shutil.copy(AUTHORS / "model" / "weights.safetensors", src / "model.safetensors")
    theirs = {k: v for k, v in CFG["text_config"].items() if k not in ("model_type", "attn_implementation",
                                                                       "lm_head_tied_to_embed_tokens")}
    theirs.update(model_type="llava_qwen", architectures=["LlavaQwenForCausalLM"], mm_vision_tower="/nonexistent/clip",
                  **{k: v for k, v in CFG["mm_config"].items() if k != "resampler"})
    (src / "config.json").write_text(json.dumps(theirs))
    n_tok = _tokenizer(src)
    v = CFG["vision_config"]
    clip = tmp_path / "clip"
    CLIPVisionConfig(**{k: v[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                          "num_attention_heads", "image_size", "patch_size",
                                          "projection_dim")}).save_pretrained(str(clip))
    return src, clip, n_tok


def _import(src, clip, out, *extra):
    return main(["import-checkpoint", "--from", "authors", "--in", str(src), "--out", str(out),
                 "--vision-config", str(clip), "--max-slices", "4", "--separator-token-ids", "202", "15", *extra])


def test_import_save_reload_generate(authors_dir, tmp_path):
    src, clip, n_tok = authors_dir
    out = tmp_path / "ours"
    assert _import(src, clip, out) == 0
    report = json.loads((out / "import_report.json").read_text())
    assert report["tensors"] == 67 and len(report["mapped"]) == 67
    by_name = {r["from"]: r for r in report["mapped"]}
    assert by_name["model.mm_projector.attn.in_proj_weight"]["to"] == [
        "projector.q_proj.weight", "projector.k_proj.weight", "projector.v_proj.weight"]
    assert "transpose" in by_name["model.mm_projector.proj"]["transform"]
    assert "max abs diff" in by_name["model.mm_projector.pos_embed"]["transform"]
    s = report["settings"]
    assert s["query_grid"] == 8 and s["vision_feature_layer"] == -2 and s["max_slices"] == 4
    # <image> added to the tokenizer, the embeddings not resized
    assert s["tokenizer_size"] == n_tok + 1 and s["embedding_rows"] == 852 and s["dtype"] == "bfloat16"

    model = SicogForConditionalGeneration.from_pretrained(str(out)).eval()
    proc = SicogProcessor.from_pretrained(str(out))
    assert model.get_input_embeddings().weight.shape[0] == 852
    assert model.config.separator_token_ids == [202, 15] and model.config.image_token_id == n_tok
    theirs = load_file(str(src / "model.safetensors"))
    torch.testing.assert_close(model.projector.proj.weight, theirs["model.mm_projector.proj"].t())
    q, k, v = theirs["model.mm_projector.attn.in_proj_weight"].chunk(3)
    torch.testing.assert_close(model.projector.k_proj.weight, k)

    enc = proc.encode([{"from": "human", "value": "<image>\nWhat shapes are in the image?"}],
                      Image.open(AUTHORS / "model" / "image.png").convert("RGB"), add_generation_prompt=True)
    batch = proc.collate([enc], padding_side="left")
    with torch.no_grad():
        cached = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                images=batch["images"], max_new_tokens=6, do_sample=False, min_new_tokens=6)
        plain = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               images=batch["images"], max_new_tokens=6, do_sample=False, min_new_tokens=6,
                               use_cache=False)
    assert cached.shape[1] == batch["input_ids"].shape[1] + 6
    assert torch.equal(cached, plain)


def test_unknown_and_missing_tensors_are_refused_by_name(authors_dir, tmp_path, caplog):
    src, clip, _ = authors_dir
    tensors = load_file(str(src / "model.safetensors"))
    save_file({**tensors, "model.extra_head.weight": torch.zeros(2)}, str(src / "model.safetensors"))
    assert _import(src, clip, tmp_path / "a") == 1
    assert "model.extra_head.weight" in caplog.text
    caplog.clear()
    del tensors["model.layers.0.mlp.up_proj.weight"]
    save_file(tensors, str(src / "model.safetensors"))
    assert _import(src, clip, tmp_path / "b") == 1
    assert "language_model.model.layers.0.mlp.up_proj.weight" in caplog.text


def test_bad_inputs_give_clear_errors(authors_dir, tmp_path, caplog):
    src, clip, _ = authors_dir
    assert main(["import-checkpoint", "--from", "authors", "--in", str(src), "--out", str(tmp_path / "a"),
                 "--separator-token-ids", "202", "15"]) == 1
    assert "--vision-config" in caplog.text
    caplog.clear()
    assert _import(src, clip, tmp_path / "b", "--separator-token-ids", "13", "29892") == 1
    assert "do not fit" in caplog.text
    (src / "model.safetensors").rename(src / "pytorch_model.bin")
    caplog.clear()
    assert _import(src, clip, tmp_path / "c") == 1
    assert "pickle files are not loaded" in caplog.text
