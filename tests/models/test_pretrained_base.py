"""One base for every family's pretrained classes (lm.models.pretrained.PretrainedModel): GPT-2 and
Qwen2 state only what differs (config class, key layout, block-list name, dtype key, cache shape)."""
from __future__ import annotations

import json

import pytest
import torch

from lm.checkpoints.safetensors import load_safetensors
from lm.models.gpt2 import GPT2, GPT2Base, GPT2Config, GPT2ForSequenceClassification
from lm.models.pretrained import CausalLM, HFConfig, PretrainedModel, SequenceClassifier
from lm.models.qwen2 import Qwen2, Qwen2Config, Qwen2ForSequenceClassification

GPT2_TINY = GPT2Config(vocab_size=61, n_positions=16, n_embd=16, n_layer=3, n_head=4)
QWEN2_TINY = Qwen2Config(vocab_size=61, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2)
CLASSES = [(GPT2, GPT2_TINY), (GPT2ForSequenceClassification, GPT2_TINY), (GPT2Base, GPT2_TINY),
           (Qwen2, QWEN2_TINY), (Qwen2ForSequenceClassification, QWEN2_TINY)]
SHARED = ("num_parameters", "new_cache", "save_pretrained", "read_config", "state_from",
          "check_pretrained", "from_pretrained")


@pytest.mark.parametrize("cls, config", CLASSES, ids=lambda c: getattr(c, "__name__", ""))
def test_every_pretrained_class_takes_the_shared_parts_from_the_one_base(cls, config):
    assert issubclass(cls, PretrainedModel)
    for name in SHARED:
        assert getattr(cls, name).__qualname__.startswith("PretrainedModel."), name
    heads = {"lm": ("CausalLM.", ("forward", "hidden_states", "output_weight")),
             "classifier": ("SequenceClassifier.", ("forward",))}
    if cls._head in heads:                                                   # the heads: written once too
        owner, names = heads[cls._head]
        assert all(getattr(cls, name).__qualname__.startswith(owner) for name in names)
    torch.manual_seed(0)
    model = cls(config)
    assert model.num_parameters() == config.num_parameters(cls._head)


@pytest.mark.parametrize("lm, classifier, config, embedding",
                         [(GPT2, GPT2ForSequenceClassification, GPT2_TINY, "transformer.wte"),
                          (Qwen2, Qwen2ForSequenceClassification, QWEN2_TINY, "model.embed_tokens")])
def test_the_shared_heads_read_the_familys_body_and_embedding(lm, classifier, config, embedding):
    assert issubclass(lm, CausalLM) and issubclass(classifier, SequenceClassifier)
    torch.manual_seed(0)
    tied, untied = lm(config).eval(), lm(type(config)(**{**config.__dict__, "tie_word_embeddings": False}))
    assert tied.lm_head is None and tied.output_weight() is tied.get_submodule(embedding).weight
    assert untied.output_weight() is untied.lm_head.weight and untied.lm_head.weight.shape == (61, 16)
    assert tied.body is tied.get_submodule(embedding.split(".")[0])
    ids = torch.tensor([[4, 5, 6, 0]])
    with torch.no_grad():
        torch.testing.assert_close(tied(ids), tied.hidden_states(ids) @ tied.get_submodule(embedding).weight.T,
                                   atol=1e-6, rtol=0)
    assert classifier(config).score.weight.shape == (config.num_labels, 16)


def test_the_cache_has_the_familys_key_value_heads():
    assert GPT2(GPT2_TINY).new_cache(2, 9).k.shape == (3, 2, 4, 9, 4)          # every head keeps its keys
    assert Qwen2(QWEN2_TINY).new_cache(2, 9).k.shape == (3, 2, 2, 9, 4)        # grouped: 2 key/value heads
    cache = Qwen2(QWEN2_TINY).bfloat16().new_cache(1, 4)
    assert cache.k.dtype == torch.bfloat16 and cache.n_layer == 3


@pytest.mark.parametrize("cls, config, key", [(GPT2, GPT2_TINY, "dtype"), (Qwen2, QWEN2_TINY, "torch_dtype")])
def test_config_json_names_the_dtype_as_the_family_does(tmp_path, cls, config, key):
    cls(config).bfloat16().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved[key] == "bfloat16" and ({"dtype", "torch_dtype"} - {key}).isdisjoint(saved)


def test_gpt2_saves_in_shards_as_qwen2_does(tmp_path):
    """GPT-2 gets the shared writer: shards with an index, and stale weight files removed."""
    torch.manual_seed(0)
    model = GPT2(GPT2_TINY).eval()
    model.save_pretrained(tmp_path, max_shard_bytes=4_000)
    shards = sorted(p.name for p in tmp_path.glob("model-*-of-*.safetensors"))
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(shards) > 1 and sorted(set(index["weight_map"].values())) == shards
    assert index["weight_map"]["transformer.h.0.attn.c_attn.weight"] in shards
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    back = GPT2.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(back(ids), model(ids))
    model.save_pretrained(tmp_path)                                          # one file now: the shards go
    assert not list(tmp_path.glob("model-*")) and not (tmp_path / "model.safetensors.index.json").exists()
    assert load_safetensors(tmp_path / "model.safetensors")["transformer.h.0.attn.c_attn.weight"].shape == (16, 48)


@pytest.mark.parametrize("cls, config", CLASSES, ids=lambda c: getattr(c, "__name__", ""))
def test_a_model_built_on_the_meta_device_is_not_initialised(cls, config):
    with torch.device("meta"):
        model = cls(config)
    assert all(p.is_meta for p in model.parameters())


@pytest.mark.parametrize("config, kind", [(GPT2_TINY, "gpt2"), (QWEN2_TINY, "qwen2")])
def test_both_configs_read_and_write_config_json_through_one_base(tmp_path, config, kind):
    assert isinstance(config, HFConfig) and type(config).model_type == kind
    assert "model_type" not in config.__dataclass_fields__                  # a class attribute, not a field
    d = {**config.to_dict(), "id2label": {"0": "a", "1": "b", "2": "c"}, "num_labels": None, "my_key": 1}
    del d["num_labels"]
    (tmp_path / "config.json").write_text(json.dumps(d))
    back = type(config).from_json(tmp_path / "config.json")
    assert back.num_labels == 3 and back.extra["my_key"] == 1 and back.to_dict()["model_type"] == kind
    assert back.to_dict() == {**config.to_dict(), "id2label": d["id2label"], "num_labels": 3, "my_key": 1}


def test_qwen2_writes_head_dim_only_when_it_is_set():
    assert "head_dim" not in QWEN2_TINY.to_dict() and QWEN2_TINY.to_dict()["rope_scaling"] is None
    assert Qwen2Config(**{**QWEN2_TINY.__dict__, "head_dim": 8}).to_dict()["head_dim"] == 8
