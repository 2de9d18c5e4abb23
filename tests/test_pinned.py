"""Behaviours that a deliberate change in a copy of the code once slipped past the whole suite.

Each test below fails if its behaviour changes, and needs nothing outside this repository (the
last four were pinned only by tests that need `../shared`).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lm.checkpoints.safetensors import load_safetensors, save_safetensors
from lm.inference.generate import generate
from lm.models.gpt2 import GPT2, GPT2Config
from lm.models.transformer import RMSNorm
from lm.ngram.kneser_ney import estimate_discounts
from lm.tokenizers.gpt2 import BYTE_ENCODER, BYTE_ORDER, GPT2Tokenizer
from lm.training.engine import TrainConfig, train


def tiny_gpt2(seed: int = 0, dropout: float = 0.0, **kw) -> GPT2:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=40, n_positions=32, n_embd=16, n_layer=2, n_head=2,
               embd_pdrop=dropout, attn_pdrop=dropout, resid_pdrop=dropout)
    return GPT2(GPT2Config(**{**cfg, **kw}))


def token_stream(n: int = 2000, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 40, (n,), generator=torch.Generator().manual_seed(seed))


# ---- RMSNorm: eps inside the square root ----------------------------------------------------

def test_rmsnorm_eps_is_inside_the_square_root():
    # With inputs around 1e-4, mean(x^2) ~ 1e-8 = eps: sqrt(ms + eps) and sqrt(ms) + eps differ by ~sqrt(2).
    x = torch.tensor([[1e-4, -1e-4, 2e-4, 0.5e-4]], dtype=torch.float64)
    norm = RMSNorm(4, eps=1e-8).double()
    ms = float((x ** 2).mean())
    inside = x / math.sqrt(ms + 1e-8)
    outside = x / (math.sqrt(ms) + 1e-8)
    assert torch.allclose(norm(x), inside, rtol=1e-12)
    assert not torch.allclose(norm(x), outside, rtol=1e-2)


# ---- GPT-2 config defaults -----------------------------------------------------------------

def test_gpt2_layer_norm_epsilon_defaults_to_1e5(tmp_path):
    assert GPT2Config().layer_norm_epsilon == 1e-5
    cfg = {"vocab_size": 40, "n_positions": 32, "n_embd": 16, "n_layer": 1, "n_head": 2, "model_type": "gpt2"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))          # no layer_norm_epsilon field
    loaded = GPT2Config.from_json(tmp_path / "config.json")
    assert loaded.layer_norm_epsilon == 1e-5
    model = GPT2(loaded)
    assert {m.eps for m in model.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-5}


# ---- the training engine -------------------------------------------------------------------

def one_step(grad_clip: float) -> GPT2:
    model = tiny_gpt2(1)
    cfg = TrainConfig(max_steps=1, batch_size=4, context=8, lr=1e-2, weight_decay=0.0, grad_clip=grad_clip,
                      device="cpu", seed=0)
    train(model, token_stream(), None, cfg, None)
    return model


def test_gradient_clipping_is_applied_before_the_optimizer_step():
    # A norm clipped to 1e-10 makes Adam's update ~ g / (sqrt(v) + 1e-8) about 100x smaller than
    # the unclipped one: if clipping came after the step (or not at all), the two would be equal.
    start = {k: v.clone() for k, v in tiny_gpt2(1).state_dict().items()}
    free, clipped = one_step(0.0), one_step(1e-10)
    moved_free = sum(float((free.state_dict()[k] - v).abs().sum()) for k, v in start.items())
    moved_clipped = sum(float((clipped.state_dict()[k] - v).abs().sum()) for k, v in start.items())
    assert moved_free > 0 and moved_clipped < 0.05 * moved_free


def test_resume_restores_the_rng_state_with_dropout(tmp_path):
    # Dropout draws from torch's RNG: resuming is exact only if the checkpoint restored it.
    data, val = token_stream(3000), token_stream(400, seed=1)
    cfg = TrainConfig(max_steps=8, batch_size=4, context=8, warmup_steps=2, checkpoint_interval=4,
                      device="cpu", seed=3)
    straight = tiny_gpt2(7, dropout=0.3)
    train(straight, data, val, cfg, tmp_path / "a")
    first = tiny_gpt2(7, dropout=0.3)
    train(first, data, val, cfg, tmp_path / "b", stop_after=4)
    torch.manual_seed(12345)                                         # disturb the RNG between the two runs
    torch.rand(1000)
    resumed = tiny_gpt2(99, dropout=0.3)
    train(resumed, data, val, cfg, tmp_path / "b", resume=True)
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


# ---- generation ----------------------------------------------------------------------------

def test_a_stop_string_inside_the_prompt_does_not_stop_generation():
    model = tiny_gpt2(2).eval()
    decode = lambda ids: "".join(chr(97 + i % 26) for i in ids)        # a toy decoder
    prompt = [1, 2, 3, 4]
    free = generate(model, [prompt], 6)[0, 4:].tolist()
    stop = decode(prompt[1:3])                                         # "cd": in the prompt only
    assert stop not in decode(free)
    out = generate(model, [prompt], 6, stop_strings=[stop], decode=decode)
    assert out[0, 4:].tolist() == free                                 # all six new tokens


# ---- tokenizer files -----------------------------------------------------------------------

def test_a_repeated_merge_keeps_its_first_rank(tmp_path):
    # merges "a b", "b c", "a b": first rank wins -> "abc" = "ab" + "c"; last rank would give "a" + "bc".
    vocab = {ch: i for i, ch in enumerate(BYTE_ORDER)}
    vocab.update({"ab": 256, "bc": 257})
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\nb c\na b\n", encoding="utf-8")
    tok = GPT2Tokenizer.from_dir(tmp_path)
    assert tok.encode("abc") == [256, vocab["c"]]


def test_byte_to_unicode_table_for_every_byte():
    # GPT-2's table: printable Latin-1 bytes map to themselves, the other 68 to U+0100 onwards, in order.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    others = [b for b in range(256) if b not in printable]
    expected = {b: chr(b) for b in printable}
    expected.update({b: chr(256 + i) for i, b in enumerate(others)})
    assert BYTE_ENCODER == expected
    assert (BYTE_ENCODER[ord(" ")], BYTE_ENCODER[ord("\n")], BYTE_ENCODER[0], BYTE_ENCODER[0xAD]) == \
        ("\u0120", "\u010a", "\u0100", "\u0143")                         # Ġ, Ċ, Ā, Ń


# ---- Kneser-Ney discounts -------------------------------------------------------------------

def test_kneser_ney_discounts_ignore_counts_of_five_and_more():
    # n1..n4 = 4, 2, 2, 1 (the 5s, 6 and 40 count in none of them):
    # Y = 4 / (4 + 2*2) = 0.5; D1 = 1 - 2*0.5*2/4 = 0.5; D2 = 2 - 3*0.5*2/2 = 0.5; D3+ = 3 - 4*0.5*1/2 = 2.0
    cnt = np.array([1, 1, 1, 1, 2, 2, 3, 3, 4, 5, 5, 6, 40, 0])
    assert estimate_discounts(cnt) == pytest.approx((0.5, 0.5, 2.0), abs=1e-12)
    assert estimate_discounts(np.append(cnt, [5] * 7)) == pytest.approx((0.5, 0.5, 2.0), abs=1e-12)


# ---- GPT-2 attention scale and the tied head ------------------------------------------------

@pytest.mark.parametrize("by_layer", [False, True])
def test_attention_scale_is_one_over_sqrt_head_dim(by_layer):
    model = tiny_gpt2(3, scale_attn_by_inverse_layer_idx=by_layer).eval()
    attn = model.transformer.h[1].attn                                  # layer index 1
    x = torch.randn(1, 5, 16)
    with torch.no_grad():
        q, k, v = attn.c_attn(x).split(16, dim=2)
        q, k, v = (t.view(1, 5, 2, 8).transpose(1, 2) for t in (q, k, v))   # (1, H, T, 8)
        scale = 1 / math.sqrt(8) / (2 if by_layer else 1)
        scores = (q @ k.transpose(-1, -2)) * scale
        scores = scores.masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), float("-inf"))
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(1, 5, 16)
        want = attn.c_proj(y)
        torch.testing.assert_close(attn(x, None, None), want, atol=1e-6, rtol=0)


def test_a_tied_head_ignores_a_stored_lm_head_weight(tmp_path):
    model = tiny_gpt2(4).eval()
    model.save_pretrained(tmp_path)
    tensors = dict(load_safetensors(tmp_path / "model.safetensors"))
    tensors["lm_head.weight"] = torch.randn(40, 16)                     # a stray, different head
    save_safetensors(tensors, tmp_path / "model.safetensors")
    back = GPT2.from_pretrained(tmp_path)
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        assert torch.equal(back(ids), model(ids))
    assert back.lm_head is None
