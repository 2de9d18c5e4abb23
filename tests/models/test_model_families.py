"""The table of model families (lm.models.auto.FAMILIES): every row complete and consistent with the
family's classes, files and tokenizer, and equal to what the places it replaced knew."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn

from lm.checkpoints.safetensors import read_safetensors_header
from lm.errors import CheckpointError, ConfigError
from lm.finetune.classifier import classifier_from_lm
from lm.finetune.lora import LoRAConfig, _is_conv1d_model, add_lora, default_target_modules, lora_layers
from lm.models.auto import (CAUSAL_LM, CLASSIFIER, FAMILIES, ModelFamily, family, family_of, load_causal_lm,
                            load_sequence_classifier, load_tokenizer, model_type)
from lm.models.gpt2 import GPT2, GPT2Base, GPT2Config, GPT2ForSequenceClassification
from lm.models.qwen2 import Qwen2, Qwen2Config, Qwen2ForSequenceClassification
from lm.stages.preflight import MODEL_FAMILIES
from lm.tokenizers.gpt2 import GPT2Tokenizer
from lm.tokenizers.hf_json import tokenizer_from_dir

LINES = ["the cat sat on the mat", "a dog ran in the park", "the sun was warm today"] * 4

# A tiny config per family; Qwen2 with fewer key/value heads than heads, so v_proj is not square
TINY = {
    "gpt2": lambda: GPT2Config(vocab_size=300, n_positions=16, n_embd=16, n_layer=2, n_head=2),
    "qwen2": lambda: Qwen2Config(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32),
}


def tiny(kind: str, cls: type) -> nn.Module:
    torch.manual_seed(0)
    return cls(TINY[kind]()).eval()


def test_the_table_knows_both_families_and_every_row_is_complete():
    assert list(FAMILIES) == ["gpt2", "qwen2"] and set(TINY) == set(FAMILIES)
    for kind, fam in FAMILIES.items():
        assert isinstance(fam, ModelFamily) and fam.model_type == kind
        for f in dataclasses.fields(fam):
            if f.name != "bare":                              # the one optional column
                assert getattr(fam, f.name) not in (None, "", ()), f"{kind}: {f.name} is empty"
        assert all(isinstance(t, str) and t for t in fam.lora_targets)
        assert isinstance(fam.conv1d, bool) and callable(fam.tokenizer)


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_each_class_reports_its_row_and_carries_the_body(kind):
    fam = FAMILIES[kind]
    models = [tiny(kind, c) for c in fam.classes]
    assert fam.causal_lm in fam.classes and fam.classifier in fam.classes
    for m in models:
        assert type(m.config) is fam.config and m.config.to_dict()["model_type"] == kind
        assert family_of(m) is fam
    lm, clf = models[0], models[1]
    body_lm, body_clf = getattr(lm, fam.body), getattr(clf, fam.body)      # the decoder the head moves between
    assert type(body_lm) is type(body_clf)
    assert body_lm.state_dict().keys() == body_clf.state_dict().keys()
    assert hasattr(clf, "score") and not hasattr(body_lm, "score")


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_default_lora_targets_exist_in_a_tiny_model(kind):
    fam = FAMILIES[kind]
    for cls in (fam.causal_lm, fam.classifier):
        model = tiny(kind, cls)
        assert default_target_modules(model) == list(fam.lora_targets)
        add_lora(model, LoRAConfig(r=2, alpha=4.0, target_modules=default_target_modules(model)))
        wrapped = lora_layers(model)
        layers = TINY[kind]().to_dict().get("n_layer") or TINY[kind]().num_hidden_layers
        for target in fam.lora_targets:                      # each target: one layer per block
            assert sum(name.endswith("." + target) for name in wrapped) == layers


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_conv1d_column_matches_the_saved_weights_layout(kind, tmp_path):
    """conv1d: the checkpoint holds a target's weight as (in, out); else nn.Linear's (out, in)."""
    fam = FAMILIES[kind]
    model = tiny(kind, fam.causal_lm)
    model.save_pretrained(tmp_path)
    header, _, _ = read_safetensors_header(tmp_path / "model.safetensors")
    target = fam.lora_targets[-1]
    name, layer = next((n, m) for n, m in model.named_modules() if n.endswith("." + target))
    out_in = [layer.out_features, layer.in_features]
    assert out_in[0] != out_in[1]                            # a layer whose layout shows
    key = next(k for k in header if k.endswith(f"{name.split('.', 1)[1]}.weight"))
    assert header[key]["shape"] == (out_in[::-1] if fam.conv1d else out_in)
    assert _is_conv1d_model(model) is fam.conv1d


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_a_saved_folder_is_read_back_through_its_row(kind, tmp_path):
    fam = FAMILIES[kind]
    tok = GPT2Tokenizer.train(LINES, 300)
    tok.save(tmp_path)
    tiny(kind, fam.causal_lm).save_pretrained(tmp_path)
    assert model_type(tmp_path) == kind and family(tmp_path) is fam
    assert type(load_causal_lm(tmp_path)) is fam.causal_lm
    loaded = load_tokenizer(tmp_path)
    assert loaded.vocab_size == tok.vocab_size and loaded.encode(LINES[1]) == tok.encode(LINES[1])
    clf = classifier_from_lm(tmp_path, ["no", "yes"], pad_token_id=0)
    assert type(clf) is fam.classifier
    body = getattr(clf, fam.body).state_dict()
    for k, v in getattr(load_causal_lm(tmp_path), fam.body).state_dict().items():
        assert torch.equal(body[k], v)                       # the decoder moved over whole
    clf.save_pretrained(tmp_path / "clf")
    assert type(load_sequence_classifier(tmp_path / "clf")) is fam.classifier


def test_an_unknown_family_is_refused_by_name(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(CheckpointError, match="model_type 'llama' is not supported"):
        family(tmp_path)
    assert family_of(nn.Linear(2, 2)) is None and _is_conv1d_model(nn.Linear(2, 2)) is False
    with pytest.raises(ConfigError, match="no default LoRA target modules for Linear"):
        default_target_modules(nn.Linear(2, 2))


def test_the_table_gives_what_the_six_places_knew():
    """Oracle: the dicts and checks the table replaced (models/auto, preflight, finetune/classifier,
    finetune/lora), written out as they were."""
    old_causal = {"gpt2": GPT2, "qwen2": Qwen2}
    old_classifier = {"gpt2": GPT2ForSequenceClassification, "qwen2": Qwen2ForSequenceClassification}
    old_body = {"gpt2": "transformer", "qwen2": "model"}                              # classifier.BODY
    old_preflight = {"gpt2": (GPT2, GPT2Tokenizer.from_dir), "qwen2": (Qwen2, tokenizer_from_dir)}
    old_targets = {"gpt2": ["c_attn"], "qwen2": ["q_proj", "v_proj"]}                 # default_target_modules
    assert CAUSAL_LM == old_causal and CLASSIFIER == old_classifier
    assert {k: f.body for k, f in FAMILIES.items()} == old_body
    assert {k: (f.causal_lm, f.tokenizer) for k, f in MODEL_FAMILIES.items()} == old_preflight
    assert {k: list(f.lora_targets) for k, f in FAMILIES.items()} == old_targets
    for kind, fam in FAMILIES.items():
        for cls in fam.classes:                              # lora._is_conv1d_model was this isinstance
            assert _is_conv1d_model(tiny(kind, cls)) is (cls in (GPT2, GPT2ForSequenceClassification, GPT2Base))
    assert FAMILIES["gpt2"].bare is GPT2Base and FAMILIES["qwen2"].bare is None          # lora.load_adapted
