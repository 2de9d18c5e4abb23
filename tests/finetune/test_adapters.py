"""Adapters and heads every direction: PEFT folders of every task type, modules_to_save as PEFT
reads them, a refused adapter that leaves the model as it was, base + adapter in one call, and a
sequence-classification folder loaded by its config.json.

The PEFT folders here are written by hand in PEFT's layout (adapter_config.json as PEFT 0.x
writes it, tensors under `base_model.model.<module>.lora_A.weight`), and the expected outputs
are computed by hand: W + (alpha / r) B A in every target, the saved head copied in.
"""
from __future__ import annotations

import json

import pytest
import torch

import chat_models
from lm.chat import load_engine
from lm.checkpoints.safetensors import load_safetensors, save_safetensors
from lm.errors import CheckpointError, ConfigError
from lm.finetune.lora import (LoRAConfig, add_lora, load_adapted, load_adapter, lora_layers, plan_lora,
                              save_adapter)
from lm.inference.engine import Settings
from lm.models.auto import load_causal_lm, load_sequence_classifier
from lm.models.gpt2 import GPT2, GPT2Base, GPT2Config, GPT2ForSequenceClassification
from lm.models.qwen2 import Qwen2, Qwen2Config, Qwen2ForSequenceClassification
from lm.utils import torch_threads

IDS = torch.tensor([[1, 5, 7, 9, 2, 3], [4, 4, 8, 1, 0, 6]])
R, ALPHA = 2, 4.0
FAMILIES = {
    "gpt2": (lambda cls, **kw: cls(GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                                              embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, **kw)),
             GPT2, GPT2ForSequenceClassification, ["c_attn"]),
    "qwen2": (lambda cls, **kw: cls(Qwen2Config(vocab_size=50, hidden_size=16, intermediate_size=32,
                                                num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                                max_position_embeddings=32, **kw)),
              Qwen2, Qwen2ForSequenceClassification, ["q_proj", "v_proj"]),
}


def make(family, cls, seed=0, **kw):
    torch.manual_seed(seed)
    return FAMILIES[family][0](cls, **kw).eval()


def peft_config(task_type, targets, modules_to_save=None, base="../base", fan_in_fan_out=False):
    """adapter_config.json with every key PEFT 0.x writes (the gpt2_lora_peft fixture's set)."""
    return {"alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": base, "bias": "none",
            "fan_in_fan_out": fan_in_fan_out, "inference_mode": True, "init_lora_weights": True,
            "layer_replication": None, "layers_pattern": None, "layers_to_transform": None, "loftq_config": {},
            "lora_alpha": ALPHA, "lora_bias": False, "lora_dropout": 0.0, "megatron_config": None,
            "megatron_core": "megatron.core", "modules_to_save": modules_to_save, "peft_type": "LORA", "r": R,
            "rank_pattern": {}, "revision": None, "target_modules": targets, "task_type": task_type,
            "use_dora": False, "use_rslora": False}


def write_peft_adapter(folder, model, config, bare=False, head=None, seed=1):
    """A PEFT-layout adapter for `model`: random A and B for every target (matched by suffix), the
    head's weight under `base_model.model.<head>.weight`; `bare`: module names of transformers' bare
    GPT2Model ("h.0...", not "transformer.h.0..."). Returns (tensors, the hand-merged state)."""
    g = torch.Generator().manual_seed(seed)
    tensors, expected = {}, {k: v.clone() for k, v in model.state_dict().items()}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and any(name.endswith("." + t) for t in config["target_modules"]):
            a = torch.randn(R, m.in_features, generator=g) * 0.3
            b = torch.randn(m.out_features, R, generator=g) * 0.3
            key = "base_model.model." + (name.removeprefix("transformer.") if bare else name)
            tensors[f"{key}.lora_A.weight"], tensors[f"{key}.lora_B.weight"] = a, b
            expected[f"{name}.weight"] += (ALPHA / R) * b @ a
    if head is not None:
        w = torch.randn(model.score.weight.shape, generator=g)
        tensors[f"base_model.model.{head}.weight"] = w
        expected["score.weight"] = w
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
    save_safetensors(tensors, folder / "adapter_model.safetensors", {"format": "pt"})
    return tensors, expected


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with torch_threads(1):
        yield


def structure(model):
    return [(n, type(m).__name__) for n, m in model.named_modules()]


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()}, structure(model),
            {n: p.requires_grad for n, p in model.named_parameters()}, hasattr(model, "lora_config"))


def same(model, snap) -> bool:
    state, struct, grads, has_cfg = snap
    now = model.state_dict()
    return (set(now) == set(state) and all(torch.equal(now[k], state[k]) for k in state)
            and structure(model) == struct and {n: p.requires_grad for n, p in model.named_parameters()} == grads
            and hasattr(model, "lora_config") == has_cfg)


@pytest.mark.parametrize("family", ["gpt2", "qwen2"])
def test_peft_seq_cls_adapter_with_classifier_and_score(family, tmp_path):
    """PEFT writes modules_to_save ["classifier", "score"] for every sequence classifier; our heads
    are `score`: "classifier" is skipped, as PEFT skips it, and the head is loaded."""
    _, _, cls, targets = FAMILIES[family]
    base = make(family, cls, num_labels=3)
    base.save_pretrained(tmp_path / "base")
    cfg = peft_config("SEQ_CLS", targets, ["classifier", "score"], fan_in_fan_out=family == "gpt2")
    _, expected = write_peft_adapter(tmp_path / "adapter", base, cfg, head="score")
    model = load_adapted(tmp_path / "adapter")                    # the base from base_model_name_or_path
    assert type(model) is cls and len(lora_layers(model)) == 2 * len(targets)
    reference = make(family, cls, num_labels=3)
    reference.load_state_dict(expected)
    assert (model(IDS) - reference(IDS)).abs().max() < 1e-5
    merged = load_adapted(tmp_path / "adapter", tmp_path / "base", merged=True)
    assert not lora_layers(merged) and (merged(IDS) - reference(IDS)).abs().max() < 1e-5
    save_adapter(model, tmp_path / "again")                        # and back out: "classifier" skipped again
    assert json.loads((tmp_path / "again" / "adapter_config.json").read_text())["modules_to_save"] == ["classifier", "score"]
    assert set(load_safetensors(tmp_path / "again" / "adapter_model.safetensors")) == \
        set(load_safetensors(tmp_path / "adapter" / "adapter_model.safetensors"))


@pytest.mark.parametrize("task_type", ["CAUSAL_LM", None, "FEATURE_EXTRACTION"])
def test_peft_adapters_of_every_task_type_load(task_type, tmp_path):
    kind = GPT2Base if task_type == "FEATURE_EXTRACTION" else GPT2
    base = make("gpt2", GPT2)
    base.save_pretrained(tmp_path / "base")
    model_for_keys = make("gpt2", kind)
    cfg = peft_config(task_type, ["c_attn", "c_fc"], fan_in_fan_out=True)
    tensors, expected = write_peft_adapter(tmp_path / "adapter", model_for_keys, cfg, bare=kind is GPT2Base)
    assert all(k.startswith("base_model.model.h.") for k in tensors) == (kind is GPT2Base)
    model = load_adapted(tmp_path / "adapter")
    assert type(model) is kind
    reference = make("gpt2", kind)
    reference.load_state_dict(expected)
    assert (model(IDS) - reference(IDS)).abs().max() < 1e-5
    if kind is GPT2Base:                                          # our own save writes PEFT's names too
        save_adapter(model, tmp_path / "again")
        assert set(load_safetensors(tmp_path / "again" / "adapter_model.safetensors")) == set(tensors)


@pytest.mark.parametrize("task_type", ["TOKEN_CLS", "QUESTION_ANS", "SEQ_2_SEQ_LM", "SOMETHING_ELSE"])
def test_task_types_without_a_model_here_are_refused_by_name(task_type, tmp_path):
    make("gpt2", GPT2).save_pretrained(tmp_path / "base")
    write_peft_adapter(tmp_path / "adapter", make("gpt2", GPT2), peft_config(task_type, ["c_attn"]))
    with pytest.raises(CheckpointError, match=f"task_type '{task_type}' on a gpt2 model is not implemented"):
        load_adapted(tmp_path / "adapter")


def test_modules_to_save_must_match_one_module(tmp_path):
    model = make("gpt2", GPT2)
    with pytest.raises(ConfigError, match="has no module 'classifier' or 'score'"):
        add_lora(model, LoRAConfig(r=2, alpha=2, modules_to_save=["classifier", "score"]))
    assert not lora_layers(model) and all(p.requires_grad for p in model.parameters())   # add_lora refused cleanly too
    plan = plan_lora(make("gpt2", GPT2ForSequenceClassification, num_labels=2),
                     LoRAConfig(r=2, alpha=2, modules_to_save=["classifier", "score"]))
    assert plan.saved == ["score"]


def test_a_refused_adapter_leaves_the_model_exactly_as_it_was(tmp_path):
    cls_base = make("gpt2", GPT2ForSequenceClassification, num_labels=3)
    good_cfg = peft_config("SEQ_CLS", ["c_attn"], ["classifier", "score"], fan_in_fan_out=True)
    tensors, expected = write_peft_adapter(tmp_path / "good", cls_base, good_cfg, head="score")
    bad = {}

    def variant(name, config=None, change=None):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps(config or good_cfg))
        t = dict(tensors)
        if change:
            change(t)
        if all(x.is_floating_point() for x in t.values()):
            save_safetensors(t, folder / "adapter_model.safetensors")
        else:                                                      # safetensors here holds floats only
            torch.save(t, folder / "adapter_model.bin")
        bad[name] = folder

    key = "base_model.model.transformer.h.1.attn.c_attn.lora_B.weight"
    variant("shape", change=lambda t: t.update({key: torch.zeros(48, R + 1)}))
    variant("missing", change=lambda t: t.pop(key))
    variant("unexpected", change=lambda t: t.update({"base_model.model.transformer.wte.lora_A.weight": torch.zeros(2)}))
    variant("integers", change=lambda t: t.update({key: torch.zeros(48, R, dtype=torch.int64)}))
    variant("not_linear", {**good_cfg, "target_modules": ["c_attn", "ln_1"]})
    variant("no_head", {**good_cfg, "modules_to_save": ["classifier"]})
    variant("rank", {**good_cfg, "rank_pattern": {"h.0.attn.c_attn": 3}})
    model = make("gpt2", GPT2ForSequenceClassification, num_labels=3)
    before = snapshot(model)
    logits = model(IDS)
    for name, folder in bad.items():
        with pytest.raises(CheckpointError):
            load_adapter(model, folder)
        assert same(model, before), name                           # weights, modules, trainable flags, no config
        assert torch.equal(model(IDS), logits), name
    load_adapter(model, tmp_path / "good")                         # the retry works
    reference = make("gpt2", GPT2ForSequenceClassification, num_labels=3)
    reference.load_state_dict(expected)
    assert (model(IDS) - reference(IDS)).abs().max() < 1e-5
    causal = make("gpt2", GPT2)                                    # a SEQ_CLS adapter on a language model
    snap = snapshot(causal)
    with pytest.raises(CheckpointError, match="has no module 'classifier' or 'score'"):
        load_adapter(causal, tmp_path / "good")
    assert same(causal, snap)


def test_base_model_found_given_or_explained(tmp_path, monkeypatch):
    make("gpt2", GPT2).save_pretrained(tmp_path / "base")
    cfg = peft_config("CAUSAL_LM", ["c_attn"], base=str(tmp_path / "base"), fan_in_fan_out=True)
    write_peft_adapter(tmp_path / "a1", make("gpt2", GPT2), cfg)
    assert type(load_adapted(tmp_path / "a1")) is GPT2             # an absolute path
    monkeypatch.chdir(tmp_path)
    write_peft_adapter(tmp_path / "a2", make("gpt2", GPT2), {**cfg, "base_model_name_or_path": "base"})
    assert type(load_adapted("a2")) is GPT2                        # relative to where we are
    write_peft_adapter(tmp_path / "a3", make("gpt2", GPT2), {**cfg, "base_model_name_or_path": "nowhere/model"})
    with pytest.raises(CheckpointError, match="base model 'nowhere/model' is no model folder"):
        load_adapted(tmp_path / "a3")
    assert type(load_adapted(tmp_path / "a3", base=tmp_path / "base")) is GPT2   # a given base wins
    write_peft_adapter(tmp_path / "a4", make("gpt2", GPT2), {**cfg, "base_model_name_or_path": None})
    with pytest.raises(CheckpointError, match="no base_model_name_or_path"):
        load_adapted(tmp_path / "a4")


@pytest.mark.parametrize("family", ["gpt2", "qwen2"])
def test_sequence_classifier_folder_loads_by_its_config(family, tmp_path):
    _, lm_cls, cls, _ = FAMILIES[family]
    model = make(family, cls, num_labels=4)
    model.save_pretrained(tmp_path / "cls")
    loaded = load_sequence_classifier(tmp_path / "cls")
    assert type(loaded) is cls and torch.equal(loaded(IDS), model(IDS))
    make(family, lm_cls).save_pretrained(tmp_path / "lm")
    assert type(load_causal_lm(tmp_path / "lm")) is lm_cls


def test_chat_with_an_adapter(tmp_path):
    """lm.chat / lm.serve take an adapter (--adapter, or the adapter folder itself): merged, the
    engine's greedy answer is the hand-merged model's."""
    base_dir = chat_models.random_chat_model(tmp_path / "base", n_positions=64)
    base = load_causal_lm(base_dir)
    cfg = peft_config("CAUSAL_LM", ["c_attn"], base=str(base_dir), fan_in_fan_out=True)
    _, expected = write_peft_adapter(tmp_path / "adapter", base, cfg)
    reference = load_causal_lm(base_dir)
    reference.load_state_dict(expected)
    for engine in (load_engine(base_dir, tmp_path / "adapter"), load_engine(tmp_path / "adapter")):
        assert not lora_layers(engine.model) and engine.format == "chatml"
        ids = engine.encode_chat([{"role": "user", "content": "Hi"}])
        got = engine.reply(ids, Settings(max_new_tokens=8)).run()
        assert (engine.model(torch.tensor([ids])) - reference(torch.tensor([ids]))).abs().max() < 1e-4
        assert got.ids == engine.reply(ids, Settings(max_new_tokens=8)).run().ids
    seq = tmp_path / "seq"
    write_peft_adapter(seq, base, {**cfg, "task_type": "SEQ_CLS"})
    with pytest.raises(ConfigError, match="a SEQ_CLS adapter, not a language model"):
        load_engine(seq)
