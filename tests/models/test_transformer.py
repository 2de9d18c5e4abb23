"""The decoder transformer (chapter 4): RMSNorm, RoPE, attention (fast == book's literal), masks."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lm.errors import ConfigError
from lm.models.transformer import (DecoderConfig, DecoderLanguageModel, MultiHeadAttention, ReferenceMultiHeadAttention, RMSNorm, rope)


def test_rmsnorm_matches_its_formula():
    torch.manual_seed(0)
    norm = RMSNorm(6, eps=1e-8)
    with torch.no_grad():
        norm.scale.copy_(torch.arange(1.0, 7.0))
    x = torch.randn(2, 3, 6)
    rms = torch.sqrt((x ** 2).mean(-1, keepdim=True) + 1e-8)
    assert torch.allclose(norm(x), x / rms * torch.arange(1.0, 7.0), atol=1e-6)
    # hand case: x = (3, 4) -> rms = sqrt(12.5)
    n2 = RMSNorm(2)
    assert torch.allclose(n2(torch.tensor([3.0, 4.0])), torch.tensor([3.0, 4.0]) / math.sqrt(12.5))


def test_rope_rotates_interleaved_pairs_by_position_times_theta():
    x = torch.ones(1, 3, 4)  # positions 0..2, pairs (x0, x1), (x2, x3)
    out = rope(x)
    assert torch.allclose(out[0, 0], x[0, 0])  # position 0: no rotation
    for m in (1, 2):
        for i, theta in enumerate([1.0, 10000 ** (-2 / 4)]):
            a = m * theta
            expected = torch.tensor([math.cos(a) - math.sin(a), math.sin(a) + math.cos(a)])
            assert torch.allclose(out[0, m, 2 * i:2 * i + 2], expected, atol=1e-6)
    assert torch.allclose(out.norm(dim=-1), x.norm(dim=-1))  # rotations keep lengths


def test_rope_dot_product_depends_only_on_relative_position():
    torch.manual_seed(1)
    q, k = torch.randn(16), torch.randn(16)

    def score(m, n):
        seq = torch.zeros(1, 20, 16)
        seq2 = torch.zeros(1, 20, 16)
        seq[0, m], seq2[0, n] = q, k
        return float(rope(seq)[0, m] @ rope(seq2)[0, n])

    assert score(5, 2) == pytest.approx(score(12, 9), abs=1e-5)
    assert score(3, 3) == pytest.approx(score(17, 17), abs=1e-5)
    assert score(3, 3) == pytest.approx(float(q @ k), abs=1e-5)
    assert score(5, 2) != pytest.approx(score(5, 4), abs=1e-3)


def test_shapes_and_untied_output():
    m = DecoderLanguageModel(DecoderConfig(vocab_size=60, emb_dim=32, num_heads=4, num_blocks=3))
    assert m(torch.zeros(2, 7, dtype=torch.long)).shape == (2, 7, 60)
    assert len(m.layers) == 3 and m.output.shape == (32, 60)
    assert m.output.data_ptr() != m.embedding.weight.data_ptr()
    assert torch.equal(m.layers[0].mlp.B_1, torch.zeros(128))
    bound = math.sqrt(6 / (32 + 8))  # each head's (C, d_h) block is Xavier-initialised on its own
    W = m.layers[0].attn.W_QKV
    assert W.abs().max() <= bound and W[:, :8].abs().max() > 0.8 * bound


@pytest.mark.parametrize("attention", ["fast", "reference"])
def test_causal_future_tokens_never_change_earlier_logits(attention):
    torch.manual_seed(2)
    m = DecoderLanguageModel(DecoderConfig(50, 32, 4, 2, attention=attention))
    a = torch.randint(0, 50, (2, 12))
    b = a.clone()
    b[:, 7:] = torch.randint(0, 50, (2, 5))
    assert torch.allclose(m(a)[:, :7], m(b)[:, :7], atol=1e-5)
    assert not torch.allclose(m(a)[:, 7:], m(b)[:, 7:], atol=1e-3)


def test_fast_attention_equals_literal_attention():
    torch.manual_seed(3)
    ref = ReferenceMultiHeadAttention(32, 8)
    for p in ref.parameters():
        torch.nn.init.normal_(p, std=0.3)
    fast = MultiHeadAttention(32, 8).load_reference(ref)
    x = torch.randn(3, 11, 32)
    assert torch.allclose(fast(x), ref(x), atol=1e-5)
    mask = torch.ones(3, 11)
    mask[0, 8:] = 0
    mask[2, :3] = 0
    assert torch.allclose(fast(x, mask), ref(x, mask), atol=1e-5)


def test_fast_model_equals_literal_model_forward_and_gradient():
    torch.manual_seed(4)
    ref = DecoderLanguageModel(DecoderConfig(40, 32, 4, 2, attention="reference"))
    fast = ref.converted("fast")
    ids = torch.randint(0, 40, (2, 9))
    lr, lf = ref(ids), fast(ids)
    assert torch.allclose(lr, lf, atol=1e-5)
    lr.square().mean().backward()
    lf.square().mean().backward()
    g_ref = torch.cat([h.W_Q.grad for h in ref.layers[0].attn.heads], dim=1)
    assert torch.allclose(fast.layers[0].attn.W_QKV.grad[:, :32], g_ref, atol=1e-5)


@pytest.mark.parametrize("attention", ["fast", "reference"])
def test_padding_mask_left_padded_equals_unpadded(attention):
    # RoPE scores depend only on relative positions, so a left-padded row whose padding is masked
    # gives the same logits on its real tokens as the same tokens without padding.
    torch.manual_seed(5)
    m = DecoderLanguageModel(DecoderConfig(30, 16, 2, 2, attention=attention))
    real = torch.randint(1, 30, (1, 6))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), real], dim=1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    assert torch.allclose(m(padded, mask)[:, 3:], m(real), atol=1e-5)
    assert torch.isfinite(m(padded, mask)).all()


def test_tiny_batch_overfits():
    torch.manual_seed(6)
    m = DecoderLanguageModel(DecoderConfig(20, 32, 4, 2))
    ids = torch.randint(0, 20, (4, 9))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(120):
        loss = F.cross_entropy(m(ids[:, :-1]).reshape(-1, 20), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_bad_configs_raise_clear_errors():
    with pytest.raises(ConfigError, match="num_heads=3 must divide emb_dim=32"):
        DecoderLanguageModel(DecoderConfig(10, 32, 3, 1))
    with pytest.raises(ConfigError, match="odd"):
        DecoderLanguageModel(DecoderConfig(10, 24, 8, 1))  # head width 3
    with pytest.raises(ConfigError, match="even head width"):
        rope(torch.zeros(1, 4, 5))
    with pytest.raises(ConfigError, match="attention"):
        DecoderLanguageModel(DecoderConfig(10, 32, 4, 1, attention="flash"))
