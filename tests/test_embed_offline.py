"""The Hub is offline while an encoder loads, and only then: the process's own setting comes back."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import sentence_transformers
from huggingface_hub import constants, is_offline_mode

from sicog.curate.embed import hub_offline, load_encoder


@pytest.fixture()
def online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_load_encoder_is_offline_only_while_loading(online, monkeypatch, tmp_path):
    seen = {}

    def fake_model(path, **kwargs):
        seen.update(offline=is_offline_mode(), env=os.environ.get("HF_HUB_OFFLINE"), local=kwargs["local_files_only"])
        return SimpleNamespace(max_seq_length=8, tokenizer=SimpleNamespace(padding_side="right"), dtype="float32",
                               eval=lambda: None)

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", fake_model)
    load_encoder(tmp_path, "cpu")
    assert seen == {"offline": True, "env": "1", "local": True}
    assert not is_offline_mode() and "HF_HUB_OFFLINE" not in os.environ


def test_hub_offline_restores_what_was_set_even_after_an_error(online, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(RuntimeError), hub_offline():
        assert is_offline_mode()
        raise RuntimeError("load failed")
    assert not is_offline_mode() and os.environ["HF_HUB_OFFLINE"] == "0"
