"""Sampling (5.4): the NumPy reference by hand, torch processors == reference, seeded distribution tests."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lm.errors import SamplingError
from lm.inference.sampling import (SamplingConfig, process_logits, sample_next, sample_token, token_counts, token_probabilities)

VOCAB = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog"]   # the book's example
LOGITS = np.array([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -1.5])


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


# ---- the reference, against hand computations ------------------------------------------------

def test_temperature_is_softmax_of_scaled_logits():
    for t in (0.2, 0.7, 1.0, 2.0):
        np.testing.assert_allclose(token_probabilities(LOGITS, SamplingConfig(temperature=t)),
                                   softmax(LOGITS / t), atol=1e-12)


def test_top_k_keeps_k_largest_renormalised():
    p = token_probabilities(LOGITS, SamplingConfig(top_k=3))
    np.testing.assert_allclose(p[:3], softmax(LOGITS[:3]), atol=1e-12)
    assert (p[3:] == 0).all()
    # min_tokens_to_keep wins over a smaller top_k
    assert (token_probabilities(LOGITS, SamplingConfig(top_k=1, min_tokens_to_keep=2)) > 0).sum() == 2


def test_top_p_keeps_smallest_set_reaching_p():
    probs = softmax(LOGITS)                      # 0.3445, 0.2089, 0.1267, 0.0769, ...
    cum = np.cumsum(probs)
    for top_p in (0.3, 0.5, 0.6, 0.9):
        n_keep = int(np.searchsorted(cum, top_p) + 1)    # first index where the mass reaches top_p
        p = token_probabilities(LOGITS, SamplingConfig(top_p=top_p))
        assert (p > 0).sum() == n_keep
        np.testing.assert_allclose(p[:n_keep], probs[:n_keep] / probs[:n_keep].sum(), atol=1e-12)
    # the most probable token alone exceeds top_p: it is kept (the book's code would keep the least probable)
    p = token_probabilities(np.array([5.0, 0.0, -1.0]), SamplingConfig(top_p=0.5))
    assert p.tolist() == [1.0, 0.0, 0.0]
    p = token_probabilities(np.array([5.0, 0.0, -1.0]), SamplingConfig(top_p=0.5, min_tokens_to_keep=2))
    assert (p > 0).tolist() == [True, True, False]
    # top_p = 1 changes nothing
    np.testing.assert_allclose(token_probabilities(LOGITS, SamplingConfig(top_p=1.0)), softmax(LOGITS))


def test_penalties_by_hand():
    logits = np.array([2.0, -1.0, 0.5, 0.0])
    cfg = SamplingConfig(repetition_penalty=2.0, presence_penalty=0.5, frequency_penalty=0.25)
    p = token_probabilities(logits, cfg, prev_tokens=[0, 0, 1])
    # token 0: 2.0/2 - 0.5 - 0.25*2 = 0.0;  token 1: -1.0*2 - 0.5 - 0.25 = -2.75
    np.testing.assert_allclose(p, softmax(np.array([0.0, -2.75, 0.5, 0.0])), atol=1e-12)


def test_book_input_checks():
    with pytest.raises(SamplingError, match="mismatch between logits"):
        sample_token(LOGITS[:5], VOCAB)
    with pytest.raises(SamplingError, match="temperature must be positive"):
        sample_token(LOGITS, VOCAB, temperature=0)
    with pytest.raises(SamplingError, match="top_k must be between 0 and the vocabulary size 8"):
        sample_token(LOGITS, VOCAB, top_k=9)
    with pytest.raises(SamplingError, match="top_k must be a non-negative"):
        sample_token(LOGITS, VOCAB, top_k=-1)
    for bad in (0.0, 1.5):
        with pytest.raises(SamplingError, match=r"top_p must be in the range \(0, 1\]"):
            sample_token(LOGITS, VOCAB, top_p=bad)
    with pytest.raises(SamplingError, match="no candidate token left"):
        sample_token(np.full(8, -np.inf), VOCAB)
    with pytest.raises(SamplingError, match="NaN"):
        sample_token(np.array([0.0, np.nan]))
    assert isinstance(SamplingError("x"), ValueError)          # the book's callers catch ValueError


def test_sample_token_returns_vocabulary_items_and_prev_tokens_as_words():
    rng = np.random.default_rng(0)
    word = sample_token(LOGITS, VOCAB, temperature=0.01, rng=rng)
    assert word == "the"
    # a huge presence penalty on "the" moves the argmax to "quick"
    assert sample_token(LOGITS, VOCAB, temperature=0.01, presence_penalty=100.0, prev_tokens=["the"], rng=rng) == "quick"


# ---- seeded distribution tests -----------------------------------------------------------------

@pytest.mark.parametrize("cfg", [SamplingConfig(temperature=0.5), SamplingConfig(temperature=2.0),
                                 SamplingConfig(top_k=3), SamplingConfig(top_p=0.8),
                                 SamplingConfig(temperature=0.7, top_k=5, top_p=0.9)])
def test_empirical_frequencies_match_the_distribution(cfg):
    """20,000 seeded draws: every token's frequency is within 4 standard errors of its probability."""
    n = 20000
    p = token_probabilities(LOGITS, cfg)
    rng = np.random.default_rng(42)
    draws = [sample_token(LOGITS, None, cfg.temperature, cfg.top_k, cfg.top_p, rng=rng) for _ in range(n)]
    freq = np.bincount(draws, minlength=len(LOGITS)) / n
    se = np.sqrt(p * (1 - p) / n) + 1e-12
    assert (np.abs(freq - p) <= 4 * se).all()
    assert (freq[p == 0] == 0).all()                          # removed tokens are never drawn
    # and the torch sampler, batched, gives the same distribution
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor(LOGITS, dtype=torch.float32).repeat(n, 1)
    ids = sample_next(logits, cfg, generator=g)
    tfreq = np.bincount(ids.numpy(), minlength=len(LOGITS)) / n
    assert (np.abs(tfreq - p) <= 4 * se + 1e-6).all()


def test_lower_temperature_lowers_entropy():
    ent = []
    for t in (0.2, 0.7, 1.0, 2.0):
        p = token_probabilities(LOGITS, SamplingConfig(temperature=t))
        ent.append(-(p * np.log(p)).sum())
    assert ent == sorted(ent)


# ---- torch processors == reference --------------------------------------------------------------

CONFIGS = [SamplingConfig(), SamplingConfig(temperature=0.6, top_k=10),
           SamplingConfig(top_p=0.7), SamplingConfig(temperature=1.3, top_k=30, top_p=0.9, min_tokens_to_keep=3),
           SamplingConfig(repetition_penalty=1.5, presence_penalty=0.4, frequency_penalty=0.2, top_p=0.95),
           SamplingConfig(top_p=0.05, min_tokens_to_keep=4)]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_torch_processors_equal_reference_on_random_logits(cfg):
    gen = torch.Generator().manual_seed(7)
    B, V, T = 6, 50, 12
    logits = torch.randn(B, V, generator=gen, dtype=torch.float64) * 3
    history = torch.randint(0, V, (B, T), generator=gen)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, :4] = 0                                            # left padding is not counted
    probs = process_logits(logits, cfg, token_counts(history, V, mask)).softmax(-1)
    for b in range(B):
        prev = history[b][mask[b].bool()].tolist()
        ref = token_probabilities(logits[b].numpy(), cfg, prev)
        np.testing.assert_allclose(probs[b].numpy(), ref, atol=1e-10)


def test_torch_edge_cases():
    logits = torch.randn(2, 5)
    # top_k larger than the vocabulary is clamped (the reference refuses it, as the book does)
    torch.testing.assert_close(process_logits(logits, SamplingConfig(top_k=50)), logits)
    torch.testing.assert_close(process_logits(logits, SamplingConfig(top_p=1.0)), logits)
    bad = logits.clone()
    bad[1] = float("-inf")
    with pytest.raises(SamplingError, match="row 1"):
        process_logits(bad, SamplingConfig())
    with pytest.raises(SamplingError, match="temperature"):
        process_logits(logits, SamplingConfig(temperature=-1))
    assert sample_next(logits, None).tolist() == logits.argmax(-1).tolist()   # greedy


def test_token_counts():
    ids = torch.tensor([[1, 1, 2], [0, 3, 3]])
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    assert token_counts(ids, 4, mask).tolist() == [[0, 2, 1, 0], [0, 0, 0, 2]]
