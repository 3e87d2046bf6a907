import pytest
import torch
from PIL import Image
from transformers import (AutoModelForImageTextToText, AutoProcessor, CLIPConfig, CLIPModel, CLIPVisionConfig,
                          CLIPVisionModel, Qwen2Config, Qwen2ForCausalLM, PreTrainedTokenizerFast)

from sicog.cli import main
from sicog.model import SicogForConditionalGeneration, SicogProcessor
from sicog.model.build import load_vision_tower
from sicog.model.tiers import load_tier

CONV = [{"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A red square."}]


def llm_tokenizer():
    """A ChatML tokenizer without `<image>`, as an LLM ships it: build-model must add the token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["A red square on a white background. What is shown?"] * 20,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=specials[1:])


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    tier = load_tier("tiny")
    torch.manual_seed(0)
    vision = CLIPVisionModel(CLIPVisionConfig(**tier["vision"]))
    vision.save_pretrained(root / "clip_vision")
    full = CLIPModel(CLIPConfig(vision_config=tier["vision"],
                                text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                 num_attention_heads=2, vocab_size=99, projection_dim=96),
                                projection_dim=96))
    full.save_pretrained(root / "clip_full")
    tok = llm_tokenizer()
    assert tok.convert_tokens_to_ids("<image>") is None or tok.convert_tokens_to_ids("<image>") == tok.unk_token_id
    llm = Qwen2ForCausalLM(Qwen2Config(**tier["text"], vocab_size=len(tok)))
    llm.save_pretrained(root / "llm")
    tok.save_pretrained(root / "llm")
    return root, vision, full, llm


@pytest.mark.parametrize("clip", ["clip_vision", "clip_full"])
def test_build_model_cli(tmp_path, parts, clip):
    root, vision, full, llm = parts
    out = tmp_path / "model"
    rc = main(["build-model", "--vision", str(root / clip), "--llm", str(root / "llm"), "--tier", "tiny",
               "--out", str(out)])
    assert rc == 0
    assert (out / "model.safetensors").is_file() and (out / "processor_config.json").is_file()
    model = AutoModelForImageTextToText.from_pretrained(out)
    proc = AutoProcessor.from_pretrained(out)
    assert isinstance(model, SicogForConditionalGeneration) and isinstance(proc, SicogProcessor)
    # pretrained parts carried over unchanged
    src = vision if clip == "clip_vision" else full
    src_w = dict(src.named_parameters())
    patch = [v for k, v in src_w.items() if k.endswith("embeddings.patch_embedding.weight")][0]
    assert torch.equal(model.vision_tower.embeddings.patch_embedding.weight, patch)
    assert torch.equal(model.language_model.layers[0].mlp.up_proj.weight, llm.model.layers[0].mlp.up_proj.weight)
    assert model.config.image_token_id == proc.image_token_id
    assert model.config.text_config.vocab_size == len(proc.tokenizer) == llm.config.vocab_size + 1  # `<image>` added
    batch = proc.collate([proc.encode(CONV, Image.new("RGB", (250, 140), (200, 0, 0)))])
    with torch.no_grad():
        out_ = model(**batch)
    assert torch.isfinite(out_.loss)


def test_build_model_rejects_wrong_folder_kinds(tmp_path, parts, capsys):
    root = parts[0]
    assert main(["build-model", "--vision", str(root / "llm"), "--llm", str(root / "llm"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--vision" in err and "type 'qwen2', not a CLIP folder" in err
    assert main(["build-model", "--vision", str(root / "clip_vision"), "--llm", str(root / "clip_full"),
                 "--tokenizer", str(root / "llm"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--llm" in err and "type 'clip', not a Qwen2 LLM folder" in err
    with pytest.raises(ValueError, match="not a CLIP model"):  # the loader checks too, for callers in Python
        load_vision_tower(root / "llm")


def test_build_model_low_res_and_author_separators(tmp_path, parts):
    root = parts[0]
    out = tmp_path / "m"
    main(["build-model", "--vision", str(root / "clip_vision"), "--llm", str(root / "llm"), "--out", str(out),
          "--projector-type", "mlp", "--separator-token-ids", "13", "29", "--dtype", "bfloat16"])
    proc = SicogProcessor.from_pretrained(out)
    model = SicogForConditionalGeneration.from_pretrained(out, dtype="auto")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.config.projector_type == "mlp" and model.config.separator_token_ids == [13, 29]
    assert (proc.row_id, proc.overview_id) == (13, 29)
