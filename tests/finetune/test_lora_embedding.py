"""LoRA on embedding layers (PEFT's `lora.Embedding`): the formula by hand, merge / unmerge, what
trains, PEFT's key names both ways, refused adapters, a tied output layer, and (with `peft` and
`transformers` installed, not dependencies) the logits of PEFT's own adapters."""
from __future__ import annotations

import pytest
import torch

from lm.checkpoints.safetensors import load_safetensors, save_safetensors
from lm.errors import CheckpointError, ConfigError
from lm.finetune.lora import (LoRAConfig, LoRAEmbedding, LoRALinear, add_lora, count_parameters, load_adapter,
                              lora_layers, merge, merge_and_unload, save_adapter, unmerge)
from lm.models.gpt2 import GPT2, GPT2Config, Embedding
from lm.models.qwen2 import Qwen2, Qwen2Config

IDS = torch.tensor([[1, 5, 7, 9, 2, 3], [4, 4, 8, 1, 0, 6]])
V, C, R, ALPHA = 50, 16, 2, 4.0


def gpt2(seed=0, tied=True):
    torch.manual_seed(seed)
    return GPT2(GPT2Config(vocab_size=V, n_positions=16, n_embd=C, n_layer=2, n_head=2, embd_pdrop=0.0,
                           attn_pdrop=0.0, resid_pdrop=0.0, tie_word_embeddings=tied)).eval()


def qwen2(seed=0, tied=False):
    torch.manual_seed(seed)
    return Qwen2(Qwen2Config(vocab_size=V, hidden_size=C, intermediate_size=32, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                             tie_word_embeddings=tied)).eval()


def randomize(model, seed=1):
    """Random A and B everywhere (at init the embedding's A and the linear layers' B are zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def test_forward_is_the_base_plus_the_update_by_hand():
    base = torch.nn.Embedding(4, 3)
    layer = LoRAEmbedding(base, r=2, alpha=6.0)                  # scaling 3
    assert layer.lora_embedding_A.shape == (2, 4) and layer.lora_embedding_B.shape == (3, 2)
    x = torch.tensor([[0, 3, 3, 1]])
    assert torch.equal(layer(x), base(x))                        # A = 0: exactly the base
    with torch.no_grad():
        layer.lora_embedding_A.copy_(torch.tensor([[1.0, 0.0, 0.0, 2.0], [0.0, 1.0, 0.0, -1.0]]))
        layer.lora_embedding_B.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    # token t's row moves by 3 * B A[:, t]: token 0 -> 3 * [1, 0, 1], 3 -> 3 * [2, -1, 1], 1 -> 3 * [0, 1, 1]
    moves = torch.tensor([[3.0, 0.0, 3.0], [6.0, -3.0, 3.0], [6.0, -3.0, 3.0], [0.0, 3.0, 3.0]])
    assert torch.allclose(layer(x), base(x) + moves, atol=1e-6)
    delta = torch.tensor([[3.0, 0.0, 3.0], [0.0, 3.0, 3.0], [0.0, 0.0, 0.0], [6.0, -3.0, 3.0]])   # (V, C)
    assert torch.allclose(layer.delta_weight(), delta)
    assert layer.weight is base.weight and layer.num_embeddings == 4 and layer.embedding_dim == 3


def test_init_as_peft_a_zero_b_standard_normal():
    torch.manual_seed(0)
    layer = LoRAEmbedding(torch.nn.Embedding(1000, 256), r=64, alpha=32.0)
    assert torch.equal(layer.lora_embedding_A, torch.zeros(64, 1000))
    b = layer.lora_embedding_B                                    # 16,384 draws: N(0, 1) to within 4 sigma
    assert abs(b.mean().item()) < 0.03 and abs(b.std().item() - 1.0) < 0.03
    assert abs((b.abs() < 1).float().mean().item() - 0.6827) < 0.015   # normal, not uniform
    assert layer.scaling == 0.5


def test_merge_unmerge_and_unload_give_back_a_plain_embedding():
    model = gpt2(tied=False)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    add_lora(model, LoRAConfig(r=R, alpha=ALPHA, target_modules=["c_attn", "wte"]))
    randomize(model)
    wte = model.transformer.wte
    adapted = model(IDS)
    assert (adapted - gpt2(tied=False)(IDS)).abs().max() > 1e-2  # the adapter does something
    merge(model)
    assert wte.merged and (model(IDS) - adapted).abs().max() < 1e-5
    assert torch.allclose(wte.base.weight, base_state["transformer.wte.weight"] + wte.delta_weight())
    unmerge(model)
    assert (wte.base.weight - base_state["transformer.wte.weight"]).abs().max() < 1e-6
    merge_and_unload(model)
    assert type(model.transformer.wte) is Embedding and not lora_layers(model)
    assert sorted(model.state_dict()) == sorted(base_state)
    assert (model(IDS) - adapted).abs().max() < 1e-5


def test_only_a_and_b_train_and_padding_rows_stay_frozen():
    model = gpt2(tied=False)
    add_lora(model, LoRAConfig(r=R, alpha=ALPHA, target_modules=["c_attn", "wte"]))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "transformer.wte.lora_embedding_A", "transformer.wte.lora_embedding_B",
        *(f"transformer.h.{i}.attn.c_attn.lora_{x}.weight" for i in range(2) for x in "AB")}
    assert count_parameters(model)[0] == R * (V + C) + 2 * R * (C + 3 * C)
    model(IDS).sum().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)
    grad_a = model.transformer.wte.lora_embedding_A.grad          # (r, V): columns of the tokens seen only
    seen = IDS.unique()
    assert (grad_a[:, seen].abs().sum(0) > 0).all()
    assert torch.equal(grad_a[:, [t for t in range(V) if t not in seen]], torch.zeros(R, V - len(seen)))
    layer = LoRAEmbedding(torch.nn.Embedding(5, 3, padding_idx=0), r=2, alpha=2.0)   # the base's options apply
    layer(torch.tensor([0, 0, 2])).sum().backward()
    assert torch.equal(layer.lora_embedding_A.grad[:, 0], torch.zeros(2)) and layer.lora_embedding_A.grad[:, 2].any()


@pytest.mark.parametrize("family, targets, emb", [("gpt2", ["c_attn", "wte"], "transformer.wte"),
                                                  ("qwen2", ["q_proj", "embed_tokens"], "model.embed_tokens")])
def test_save_load_round_trip_under_peft_names(family, targets, emb, tmp_path):
    make = gpt2 if family == "gpt2" else qwen2
    model = make()
    layers = add_lora(model, LoRAConfig(r=R, alpha=ALPHA, target_modules=targets))
    assert isinstance(layers[emb], LoRAEmbedding) and sum(isinstance(m, LoRALinear) for m in layers.values()) == 2
    randomize(model)
    save_adapter(model, tmp_path)
    saved = load_safetensors(tmp_path / "adapter_model.safetensors")
    linear = "transformer.h.{}.attn.c_attn" if family == "gpt2" else "model.layers.{}.self_attn.q_proj"
    out = 3 * C if family == "gpt2" else C
    assert {k: list(v.shape) for k, v in saved.items()} == {
        f"base_model.model.{emb}.lora_embedding_A": [R, V], f"base_model.model.{emb}.lora_embedding_B": [C, R],
        **{f"base_model.model.{linear.format(i)}.lora_A.weight": [R, C] for i in range(2)},
        **{f"base_model.model.{linear.format(i)}.lora_B.weight": [out, R] for i in range(2)}}
    assert torch.equal(saved[f"base_model.model.{emb}.lora_embedding_A"], layers[emb].lora_embedding_A)
    fresh = make()
    load_adapter(fresh, tmp_path)
    assert isinstance(lora_layers(fresh)[emb], LoRAEmbedding)
    with torch.no_grad():
        assert torch.equal(fresh(IDS), model(IDS))
        assert (fresh(IDS) - make()(IDS)).abs().max() > 1e-2


def adapter_folder(tmp_path, model_maker, change=None):
    model = model_maker()
    add_lora(model, LoRAConfig(r=R, alpha=ALPHA, target_modules=["c_attn", "wte"]))
    randomize(model)
    save_adapter(model, tmp_path)
    if change:
        tensors = load_safetensors(tmp_path / "adapter_model.safetensors")
        change(tensors)
        save_safetensors(tensors, tmp_path / "adapter_model.safetensors", {"format": "pt"})
    return tmp_path


A_KEY = "base_model.model.transformer.wte.lora_embedding_A"


@pytest.mark.parametrize("name, change, file, message", [
    ("rank", lambda t: t.update({A_KEY: torch.zeros(R + 1, V)}), "adapter_config.json",
     rf"r is {R} for transformer.wte, but adapter_model.safetensors holds {A_KEY} of shape \[{R + 1}, {V}\]"),
    ("vocabulary", lambda t: t.update({A_KEY: torch.zeros(R, V + 1)}), "adapter_model.safetensors",
     rf"wrong shapes: {A_KEY} \[{R}, {V + 1}\] \(expected \[{R}, {V}\]\)"),
    ("missing", lambda t: t.pop(A_KEY), "adapter_model.safetensors", f"missing .'{A_KEY}'."),
    ("linear name", lambda t: t.update({A_KEY.replace("embedding_A", "A.weight"): t.pop(A_KEY)}),
     "adapter_model.safetensors", "missing .*unexpected .'base_model.model.transformer.wte.lora_A.weight'"),
    ("base shape", lambda t: t.update({"base_model.model.transformer.wte.base_layer.weight": torch.zeros(V + 1, C)}),
     "adapter_model.safetensors", "wrong shapes: base_model.model.transformer.wte.base_layer.weight"),
])
def test_a_wrong_embedding_adapter_is_refused_naming_the_file(name, change, file, message, tmp_path):
    folder = adapter_folder(tmp_path, gpt2, change)
    model = gpt2()
    state, logits = {k: v.clone() for k, v in model.state_dict().items()}, model(IDS)
    with pytest.raises(CheckpointError, match=message) as e:
        load_adapter(model, folder)
    assert e.value.path == str(folder / file)
    assert not lora_layers(model) and not hasattr(model, "lora_config")   # the model is as it was
    assert model.state_dict().keys() == state.keys() and all(torch.equal(model.state_dict()[k], v)
                                                              for k, v in state.items())
    assert torch.equal(model(IDS), logits) and all(p.requires_grad for p in model.parameters())


def test_peft_base_layer_weight_of_a_target_is_loaded_into_the_base(tmp_path):
    """PEFT saves a targeted `embed_tokens`' whole weight as `...embed_tokens.base_layer.weight`
    and loads it over the base's; so do we."""
    model = qwen2()
    add_lora(model, LoRAConfig(r=R, alpha=ALPHA, target_modules=["q_proj", "embed_tokens"]))
    randomize(model)
    save_adapter(model, tmp_path)
    tensors = load_safetensors(tmp_path / "adapter_model.safetensors")
    new_rows = torch.randn(V, C)
    tensors["base_model.model.model.embed_tokens.base_layer.weight"] = new_rows
    save_safetensors(tensors, tmp_path / "adapter_model.safetensors", {"format": "pt"})
    fresh = qwen2()
    assert not torch.equal(fresh.model.embed_tokens.weight, new_rows)
    load_adapter(fresh, tmp_path)
    assert torch.equal(fresh.model.embed_tokens.base.weight, new_rows)
    with torch.no_grad():
        model.model.embed_tokens.base.weight.copy_(new_rows)
        assert torch.equal(fresh(IDS), model(IDS))


@pytest.mark.parametrize("make, emb", [(gpt2, "transformer.wte"), (lambda: qwen2(tied=True), "model.embed_tokens")])
def test_a_tied_output_layer_keeps_the_base_weight_as_in_peft_and_merging_is_refused(make, emb):
    """PEFT wraps the embedding; transformers' tied lm_head reads the base parameter, so the update
    changes the input side only. Merging would change the output layer too (PEFT does it with a
    warning, 97 logits apart in our check): refused here."""
    model = make()
    add_lora(model, LoRAConfig(r=R, alpha=ALPHA, target_modules=[emb.rpartition(".")[2]]))
    randomize(model)
    layer = model.get_submodule(emb)
    assert model.output_weight() is layer.base.weight
    h = model.hidden_states(IDS)
    assert (h - make().hidden_states(IDS)).abs().max() > 1e-2     # the input side moved
    assert torch.allclose(model(IDS), h @ layer.base.weight.t(), atol=1e-6)
    assert not torch.allclose(model(IDS), h @ (layer.base.weight + layer.delta_weight()).t(), atol=1e-2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for undo in (merge, merge_and_unload):
        with pytest.raises(ConfigError, match=f"cannot merge the LoRA update of {emb}: it is tied"):
            undo(model)
        assert not layer.merged and lora_layers(model) and all(torch.equal(model.state_dict()[k], v)
                                                                  for k, v in before.items())


def test_add_lora_refuses_other_module_types_by_name():
    with pytest.raises(ConfigError, match="ln_f is a LayerNorm; LoRA wraps linear and embedding layers only"):
        add_lora(gpt2(), LoRAConfig(target_modules=["ln_f"]))


# --------------------------------------------------------------------------------------------
# PEFT itself (only where `peft` and `transformers` are installed; they are not dependencies)
# --------------------------------------------------------------------------------------------

def hf_pair(transformers, family, tied, folder):
    torch.manual_seed(0)
    if family == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=V, n_positions=16, n_embd=C, n_layer=2, n_head=2, bos_token_id=0,
                                      eos_token_id=0, tie_word_embeddings=tied)
        hf, targets = transformers.GPT2LMHeadModel(cfg), ["c_attn", "wte"]
    else:
        cfg = transformers.Qwen2Config(vocab_size=V, hidden_size=C, intermediate_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                                       tie_word_embeddings=tied)
        hf, targets = transformers.Qwen2ForCausalLM(cfg), ["q_proj", "embed_tokens"]
    hf.eval().save_pretrained(folder)
    return hf, targets


@pytest.mark.parametrize("family, tied", [("gpt2", True), ("qwen2", False)])
def test_peft_embedding_adapters_both_ways(family, tied, tmp_path):
    peft = pytest.importorskip("peft", reason="peft is not installed (not a dependency)")
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (not a dependency)")
    from lm.models.auto import load_causal_lm
    hf, targets = hf_pair(transformers, family, tied, tmp_path / "base")
    theirs = peft.get_peft_model(hf, peft.LoraConfig(r=R, lora_alpha=ALPHA, target_modules=targets)).eval()
    randomize(theirs)
    theirs.save_pretrained(tmp_path / "peft")
    ours = load_causal_lm(tmp_path / "base").eval()
    load_adapter(ours, tmp_path / "peft")
    with torch.no_grad():
        assert (ours(IDS) - theirs(IDS).logits).abs().max() < 1e-5
    mine = load_causal_lm(tmp_path / "base").eval()
    add_lora(mine, LoRAConfig(r=R, alpha=ALPHA, target_modules=targets))
    randomize(mine, seed=2)
    save_adapter(mine, tmp_path / "ours", str(tmp_path / "base"))
    back = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base"),
                                          tmp_path / "ours").eval()
    with torch.no_grad():
        assert (back(IDS).logits - mine(IDS)).abs().max() < 1e-5
        assert (mine(IDS) - load_causal_lm(tmp_path / "base")(IDS)).abs().max() > 1e-2
