"""The Elman RNN language model (chapter 3): formula, fast == book loop, causality, learning."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lm.errors import ConfigError
from lm.models.rnn import ElmanRNN, ElmanRNNUnit, RecurrentLanguageModel, RNNConfig, initialize_weights


def test_unit_matches_formula_on_hand_values():
    unit = ElmanRNNUnit(2)
    with torch.no_grad():
        unit.Wh.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        unit.Uh.copy_(torch.tensor([[0.5, 0.5], [0.0, 1.0]]))
        unit.b.copy_(torch.tensor([0.1, -0.1]))
    x, h = torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, -1.0]])
    # x Wh = [1, 2]; h Uh = [1, 0]; + b = [2.1, 1.9]
    expected = torch.tanh(torch.tensor([[2.1, 1.9]]))
    assert torch.allclose(unit(x, h), expected, atol=1e-7)


def test_shapes_and_book_initialisation():
    torch.manual_seed(0)
    m = RecurrentLanguageModel(RNNConfig(vocab_size=50, emb_dim=16, num_layers=3))
    assert m(torch.zeros(4, 7, dtype=torch.long)).shape == (4, 7, 50)
    assert len(m.rnn.rnn_units) == 3
    bound = math.sqrt(6 / (16 + 16))  # Xavier-uniform bound of a (16, 16) matrix
    for unit in m.rnn.rnn_units:
        assert unit.Wh.abs().max() <= bound and unit.Wh.abs().max() > 0.8 * bound
        assert torch.equal(unit.b, torch.zeros(16))
    assert torch.equal(m.fc.bias, torch.zeros(50))


def test_fast_stack_equals_book_loop_forward_and_gradient():
    torch.manual_seed(1)
    rnn = ElmanRNN(emb_dim=12, num_layers=2)
    initialize_weights(rnn)
    with torch.no_grad():
        for u in rnn.rnn_units:
            u.b.normal_()
    x = torch.randn(3, 9, 12, requires_grad=True)
    fast, _ = rnn(x)
    ref = rnn.forward_reference(x)
    assert torch.allclose(fast, ref, atol=1e-5)
    g_fast = torch.autograd.grad(fast.square().sum(), [x, *rnn.parameters()])
    g_ref = torch.autograd.grad(ref.square().sum(), [x, *rnn.parameters()])
    for a, b in zip(g_fast, g_ref):
        assert torch.allclose(a, b, atol=1e-5)


def test_first_position_sees_only_its_own_token():
    # h_1 = tanh(x_1 Wh + b) in layer 1 (h_0 = 0), so logits at t=0 depend on token 0 alone.
    torch.manual_seed(2)
    m = RecurrentLanguageModel(RNNConfig(30, 8, 1))
    ids = torch.tensor([[3, 4, 5]])
    u = m.rnn.rnn_units[0]
    h = torch.tanh(m.embedding.weight[3] @ u.Wh + u.b)
    assert torch.allclose(m(ids)[0, 0], m.fc(h), atol=1e-5)


def test_causal_future_tokens_never_change_earlier_logits():
    torch.manual_seed(3)
    m = RecurrentLanguageModel(RNNConfig(40, 16, 2))
    a = torch.randint(0, 40, (2, 10))
    b = a.clone()
    b[:, 6:] = torch.randint(0, 40, (2, 4))
    assert torch.equal(m(a)[:, :6], m(b)[:, :6])
    assert not torch.allclose(m(a)[:, 6:], m(b)[:, 6:])


def test_reference_flag_gives_same_logits():
    torch.manual_seed(4)
    m = RecurrentLanguageModel(RNNConfig(25, 8, 2))
    ids = torch.randint(0, 25, (2, 6))
    fast = m(ids)
    m.reference = True
    assert torch.allclose(fast, m(ids), atol=1e-5)


def test_tiny_batch_overfits():
    torch.manual_seed(5)
    m = RecurrentLanguageModel(RNNConfig(20, 32, 2))
    ids = torch.randint(0, 20, (4, 9))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(150):
        logits = m(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 20), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_bad_configs_raise_clear_errors():
    with pytest.raises(ConfigError, match="num_layers"):
        ElmanRNN(8, 0)
    with pytest.raises(ConfigError, match="vocab_size"):
        RecurrentLanguageModel(RNNConfig(0, 8, 1))
    with pytest.raises(ConfigError, match="batch, time"):
        RecurrentLanguageModel(RNNConfig(10, 8, 1))(torch.zeros(5, dtype=torch.long))
