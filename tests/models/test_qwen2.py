"""Qwen2 model: parity with the reference library (logits, padded batch, greedy tokens), GQA and RoPE
oracles, bf16, save/load round trips, the classifier head, and every refused config."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import SHARED_FIXTURES, needs_fixtures
from lm.checkpoints.safetensors import load_safetensors, save_safetensors
from lm.errors import CheckpointError, ConfigError
from lm.inference.generate import generate
from lm.models.auto import load_causal_lm, model_type
from lm.models.gpt2 import GPT2
from lm.models.qwen2 import (Qwen2, Qwen2Config, Qwen2ForSequenceClassification, Qwen2RMSNorm,
                             attention_reference, rope_cos_sin, rope_half)
from lm.models.transformer import RMSNorm, rope

TINY = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, rope_theta=10000.0)
LM_FIXTURES = ["qwen2_lm_tied", "qwen2_lm_untied"]


def tiny(cls=Qwen2, seed=0, **kw) -> torch.nn.Module:
    """A random model with weights large enough that logits differ clearly between inputs."""
    torch.manual_seed(seed)
    model = cls(Qwen2Config(**{**TINY, **kw}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if name.endswith("scale") else 0.3 * torch.randn_like(p))
    return model.eval()


def fixture(name: str, file: str) -> dict:
    return json.loads((SHARED_FIXTURES / name / file).read_text())


# --------------------------------------------------------------------------------------------
# Parity with the reference library
# --------------------------------------------------------------------------------------------

@needs_fixtures
@pytest.mark.parametrize("name", LM_FIXTURES)
def test_fixture_logits(name):
    model = Qwen2.from_pretrained(SHARED_FIXTURES / name)
    assert model.config.tie_word_embeddings == (name == "qwen2_lm_tied") and (model.lm_head is None) == (name == "qwen2_lm_tied")
    fx = fixture(name, "fixture.json")
    with torch.no_grad():
        got = model(torch.tensor(fx["input_ids"])).numpy()
    np.testing.assert_allclose(got, np.load(SHARED_FIXTURES / name / "expected_output.npy"), atol=1e-5, rtol=0)


@needs_fixtures
@pytest.mark.parametrize("name", LM_FIXTURES)
def test_fixture_left_padded_batch(name):
    """With the mask and the reference's position ids, and with positions derived from the mask."""
    model = Qwen2.from_pretrained(SHARED_FIXTURES / name)
    p = fixture(name, "fixture.json")["padded"]
    expected = np.load(SHARED_FIXTURES / name / "expected_padded.npy")
    real = np.array(p["attention_mask"], dtype=bool)
    ids, mask = torch.tensor(p["input_ids"]), torch.tensor(p["attention_mask"])
    with torch.no_grad():
        given = model(ids, attention_mask=mask, position_ids=torch.tensor(p["position_ids"])).numpy()
        derived = model(ids, attention_mask=mask).numpy()
    np.testing.assert_allclose(given[real], expected[real], atol=1e-5, rtol=0)
    np.testing.assert_allclose(derived[real], expected[real], atol=1e-5, rtol=0)


@needs_fixtures
@pytest.mark.parametrize("name, use_cache", [("qwen2_lm_tied", True), ("qwen2_lm_untied", True),
                                             ("qwen2_lm_tied", False)])
def test_fixture_greedy_tokens(name, use_cache):
    model = Qwen2.from_pretrained(SHARED_FIXTURES / name)
    g = fixture(name, "greedy.json")
    single = g["single"]
    out = generate(model, torch.tensor(single["prompt"]), single["max_new_tokens"], pad_token_id=750,
                   stop_token_ids=[g["eos_token_id"]], use_cache=use_cache)
    assert out.tolist() == single["output"]
    batch = g["left_padded_batch"]
    out = generate(model, batch["prompts"], batch["max_new_tokens"], pad_token_id=750,
                   stop_token_ids=[g["eos_token_id"]], use_cache=use_cache)
    assert out.tolist() == batch["output"]


@needs_fixtures
@pytest.mark.parametrize("name", LM_FIXTURES)
def test_both_config_layouts_read_the_same(name):
    """transformers 5's layout (rope_parameters, dtype) and the hub's (rope_theta, torch_dtype)."""
    new = Qwen2Config.from_json(SHARED_FIXTURES / name / "config.json")
    old = Qwen2Config.from_json(SHARED_FIXTURES / name / "config_hf4_style.json")
    for cfg in (new, old):
        assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.num_attention_heads,
                cfg.num_key_value_heads, cfg.head_size, cfg.rope_theta, cfg.rms_norm_eps, cfg.vocab_size,
                cfg.bos_token_id, cfg.eos_token_id) == (64, 160, 2, 4, 2, 16, 1e6, 1e-6, 768, 750, 752)
    assert {k: v for k, v in vars(new).items() if k != "extra"} == {k: v for k, v in vars(old).items() if k != "extra"}


@needs_fixtures
def test_auto_loader_detects_the_family():
    assert model_type(SHARED_FIXTURES / "qwen2_lm_tied") == "qwen2"
    assert isinstance(load_causal_lm(SHARED_FIXTURES / "qwen2_lm_untied"), Qwen2)
    assert isinstance(load_causal_lm(SHARED_FIXTURES / "gpt2_lm_safetensors"), GPT2)
    assert load_causal_lm(SHARED_FIXTURES / "qwen2_lm_tied", dtype="auto").model.embed_tokens.weight.dtype == torch.float32


def test_auto_loader_refuses_other_families(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="model_type 'llama' is not supported"):
        load_causal_lm(tmp_path)


# --------------------------------------------------------------------------------------------
# Grouped-query attention, RoPE, RMSNorm
# --------------------------------------------------------------------------------------------

def test_gqa_equals_multi_head_attention_with_repeated_kv_heads():
    """A 2-KV-head model gives the logits of a 4-KV-head model whose k/v projections repeat each
    head for its group (query heads 0,1 -> kv head 0; 2,3 -> kv head 1)."""
    gqa = tiny()
    mha = Qwen2(Qwen2Config(**{**TINY, "num_key_value_heads": 4}))
    state = gqa.state_dict()
    D = gqa.config.head_size
    for key, t in list(state.items()):
        if ".k_proj." in key or ".v_proj." in key:
            heads = t.view(2, D, *t.shape[1:])                                   # (KV, D, ...)
            state[key] = heads.repeat_interleave(2, dim=0).reshape(4 * D, *t.shape[1:])
    mha.load_state_dict(state)
    mha.eval()
    ids = torch.randint(0, 61, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(gqa(ids), mha(ids), atol=1e-5, rtol=0)


def test_sdpa_gqa_equals_the_written_out_reference():
    """The module's attention (sdpa, enable_gqa) equals softmax(qk^T/sqrt d) v with repeated heads."""
    model = tiny()
    attn = model.model.layers[0].self_attn
    x = torch.randn(2, 7, 32)
    cos, sin = rope_cos_sin(torch.arange(7)[None].expand(2, 7), 8, 10000.0, torch.float32)
    with torch.no_grad():
        got = attn(x, cos, sin, None, None)
        q = rope_half(attn.q_proj(x).view(2, 7, 4, 8).transpose(1, 2), cos, sin)
        k = rope_half(attn.k_proj(x).view(2, 7, 2, 8).transpose(1, 2), cos, sin)
        v = attn.v_proj(x).view(2, 7, 2, 8).transpose(1, 2)
        want = attn.o_proj(attention_reference(q, k, v).transpose(1, 2).reshape(2, 7, 32))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_kv_cache_stores_each_kv_head_once():
    cache = tiny().new_cache(3, 20)
    assert cache.k.shape == (2, 3, 2, 20, 8)          # (layers, B, num_key_value_heads, max_len, head_dim)


def test_rope_at_an_offset_equals_rope_over_the_full_sequence():
    x = torch.randn(2, 4, 12, 16)
    full_cos, full_sin = rope_cos_sin(torch.arange(12)[None].expand(2, 12), 16, 1e6, torch.float32)
    tail_cos, tail_sin = rope_cos_sin(torch.arange(7, 12)[None].expand(2, 5), 16, 1e6, torch.float32)
    torch.testing.assert_close(rope_half(x[:, :, 7:], tail_cos, tail_sin), rope_half(x, full_cos, full_sin)[:, :, 7:],
                               atol=0, rtol=0)


def test_cached_decoding_equals_the_full_forward():
    """Feeding a prompt, then one token at a time through the KV cache gives the full pass's logits."""
    model = tiny()
    ids = torch.randint(0, 61, (2, 11), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(2, 11)
        steps = [model(ids[:, :6], cache=cache)] + [model(ids[:, t:t + 1], cache=cache) for t in range(6, 11)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    assert cache.length == 11


def test_rotate_half_rope_is_chapter_4s_rope_on_permuted_dimensions():
    """Qwen rotates (x_i, x_{i+d/2}); chapter 4 rotates (x_2i, x_2i+1): the same after a permutation."""
    d, T = 16, 10
    x = torch.randn(1, 3, T, d, dtype=torch.float64)
    perm = torch.stack((torch.arange(d // 2), torch.arange(d // 2) + d // 2), dim=1).flatten()  # 0, 8, 1, 9, ...
    cos, sin = rope_cos_sin(torch.arange(T)[None], d, 10000.0, torch.float64)
    half = rope_half(x, cos, sin)
    interleaved = rope(x[..., perm], base=10000.0)
    torch.testing.assert_close(half[..., perm], interleaved, atol=1e-6, rtol=0)


def test_rmsnorm_is_chapter_4s_in_float32_and_rounds_like_the_reference_in_bf16():
    x = torch.randn(3, 5, 32) * 3
    ours, book = Qwen2RMSNorm(32, 1e-6), RMSNorm(32, 1e-6)
    with torch.no_grad():
        ours.scale.copy_(torch.randn(32))
        book.scale.copy_(ours.scale)
        torch.testing.assert_close(ours(x), book(x), atol=1e-6, rtol=1e-6)
        xb = x.bfloat16()
        ours.bfloat16()
        h = xb.float()
        want = ours.scale * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)).bfloat16()  # the reference's order
        got = ours(xb)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)
    assert not torch.equal(got, (book.bfloat16()(xb)))      # bf16 arithmetic throughout would round differently


def test_gradient_checkpointing_gives_the_same_gradients():
    ids = torch.randint(0, 61, (2, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 9])
    grads = []
    for recompute in (False, True):
        model = tiny().train()
        model.model.gradient_checkpointing = recompute
        model(ids, attention_mask=mask).logsumexp(-1).sum().backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# dtypes, saving and loading
# --------------------------------------------------------------------------------------------

@needs_fixtures
def test_bf16_loading_is_close_to_fp32():
    fp32 = Qwen2.from_pretrained(SHARED_FIXTURES / "qwen2_lm_untied")
    bf16 = Qwen2.from_pretrained(SHARED_FIXTURES / "qwen2_lm_untied", dtype=torch.bfloat16)
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    ids = torch.tensor(fixture("qwen2_lm_untied", "fixture.json")["input_ids"])
    with torch.no_grad():
        a, b = fp32(ids), bf16(ids).float()
    assert b.dtype == torch.float32 and (a - b).abs().max() < 0.05 * a.abs().max()
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.9


@pytest.mark.parametrize("tied", [True, False])
def test_save_and_load_round_trip(tmp_path, tied):
    model = tiny(tie_word_embeddings=tied)
    model.save_pretrained(tmp_path)
    saved = load_safetensors(tmp_path / "model.safetensors")
    assert ("lm_head.weight" in saved) == (not tied)
    assert "model.norm.weight" in saved and "model.layers.1.input_layernorm.weight" in saved
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["rope_theta"] == 10000.0
    again = Qwen2.from_pretrained(tmp_path)
    ids = torch.randint(0, 61, (1, 8))
    with torch.no_grad():
        assert torch.equal(model(ids), again(ids))


def test_sharded_bf16_save_and_stale_files(tmp_path):
    model = tiny(tie_word_embeddings=False).bfloat16()
    model.save_pretrained(tmp_path, max_shard_bytes=5_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and not (tmp_path / "model.safetensors").exists()
    assert index["metadata"]["total_size"] == sum(p.numel() * 2 for p in model.parameters())
    again = Qwen2.from_pretrained(tmp_path, dtype="auto")
    assert again.model.embed_tokens.weight.dtype == torch.bfloat16
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    model.save_pretrained(tmp_path)                       # one file again: no shard may be left to load
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_tied_checkpoint_loads_without_and_ignores_a_stored_lm_head(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path)
    tensors = dict(load_safetensors(tmp_path / "model.safetensors"))
    tensors["lm_head.weight"] = torch.zeros(61, 32)
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    save_safetensors(tensors, tmp_path / "model.safetensors")
    again = Qwen2.from_pretrained(tmp_path)
    ids = torch.randint(0, 61, (1, 5))
    with torch.no_grad():
        assert torch.equal(model(ids), again(ids))


def test_checkpoint_mismatches_are_named(tmp_path):
    tiny().save_pretrained(tmp_path)
    tensors = dict(load_safetensors(tmp_path / "model.safetensors"))
    del tensors["model.layers.1.mlp.up_proj.weight"]
    tensors["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(7)
    save_safetensors(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="missing keys: model.layers.1.mlp.up_proj.weight"):
        Qwen2.from_pretrained(tmp_path)
    tensors["model.layers.1.mlp.up_proj.weight"] = torch.zeros(48, 32)
    save_safetensors(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"q_proj.bias: shape \[7\]"):
        Qwen2.from_pretrained(tmp_path)


# --------------------------------------------------------------------------------------------
# The classifier head
# --------------------------------------------------------------------------------------------

def test_classifier_reads_the_last_real_token_and_round_trips(tmp_path):
    model = tiny(Qwen2ForSequenceClassification, num_labels=3, pad_token_id=0)
    row = torch.tensor([[5, 9, 13, 2]])
    left = torch.tensor([[0, 0, 5, 9, 13, 2], [7, 8, 9, 10, 11, 12]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    right = torch.tensor([[5, 9, 13, 2, 0, 0]])
    with torch.no_grad():
        alone = model(row)                                                       # (1, 3)
        torch.testing.assert_close(model(left, mask)[:1], alone, atol=1e-5, rtol=0)
        torch.testing.assert_close(model(right, torch.tensor([[1, 1, 1, 1, 0, 0]])), alone, atol=1e-5, rtol=0)
        torch.testing.assert_close(model(right), alone, atol=1e-5, rtol=0)        # pad_token_id finds the end
    model.save_pretrained(tmp_path)
    assert "score.weight" in load_safetensors(tmp_path / "model.safetensors")
    again = Qwen2ForSequenceClassification.from_pretrained(tmp_path)
    assert again.config.num_labels == 3
    with torch.no_grad():
        assert torch.equal(again(left, mask), model(left, mask))
    lm = Qwen2.from_pretrained(tmp_path)                      # the LM loads the base, ignoring `score`
    assert torch.equal(lm.model.embed_tokens.weight, model.model.embed_tokens.weight)


# --------------------------------------------------------------------------------------------
# What we do not implement is refused, by name
# --------------------------------------------------------------------------------------------

BASE = {"model_type": "qwen2", "vocab_size": 61, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 1e6}


@pytest.mark.parametrize("change, message", [
    ({"use_sliding_window": True}, "use_sliding_window=True: sliding-window attention"),
    ({"layer_types": ["full_attention", "sliding_attention"]}, "only full_attention"),
    ({"rope_scaling": {"type": "yarn", "factor": 4.0}}, "rope_type 'yarn' is not implemented"),
    ({"rope_parameters": {"rope_type": "linear", "rope_theta": 1e6, "factor": 2.0}}, "rope_type 'linear'"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "partial_rotary_factor": 0.5}},
     "partial_rotary_factor not implemented"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}, "disagree"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu' is not supported"),
    ({"use_mrope": True}, "multimodal RoPE"),
    ({"quantization_config": {"quant_method": "gptq"}}, "quantized weights"),
    ({"num_key_value_heads": 3}, "not a multiple of num_key_value_heads 3"),
    ({"num_attention_heads": 5}, "not divisible by num_attention_heads 5"),
    ({"hidden_size": "64"}, "hidden_size must be a positive integer"),
    ({"model_type": "gpt2"}, "model_type is 'gpt2', not 'qwen2'"),
])
def test_unsupported_configs_are_refused(tmp_path, change, message):
    (tmp_path / "config.json").write_text(json.dumps({**BASE, **change}))
    with pytest.raises(CheckpointError, match=message) as e:
        Qwen2Config.from_json(tmp_path / "config.json")
    assert str(tmp_path / "config.json") in str(e.value)


def test_accepted_variants_of_the_config():
    """What the hub's files hold: a sliding window that is off, rope_scaling null, an eos list."""
    cfg = Qwen2Config.from_dict({**BASE, "sliding_window": 32768, "use_sliding_window": False, "rope_scaling": None,
                                 "eos_token_id": [151645, 151643], "use_mrope": False, "torch_dtype": "bfloat16"})
    assert cfg.eos_token_id == 151645 and cfg.rope_theta == 1e6
    assert Qwen2Config.from_dict({k: v for k, v in BASE.items() if k != "rope_theta"}).rope_theta == 10000.0
    assert "torch_dtype" not in cfg.extra and cfg.to_dict()["sliding_window"] == 32768


def test_attention_mask_of_the_wrong_length_is_refused():
    with pytest.raises(ConfigError, match="covers cached and new positions"):
        tiny()(torch.zeros(1, 4, dtype=torch.long), attention_mask=torch.ones(1, 3))


def test_qwen25_05b_shapes_count_its_parameters():
    """The default config is Qwen2.5-0.5B's: 494 M parameters (630 M with an untied head)."""
    with torch.device("meta"):
        model = Qwen2(Qwen2Config())
    assert math.isclose(model.num_parameters() / 1e6, 494.03, abs_tol=0.01)
