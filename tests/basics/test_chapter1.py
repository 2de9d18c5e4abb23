"""Chapter 1.2 (quadratic loss, gradient descent) and the embedding = one-hot x linear identity."""
import numpy as np
import pytest
import torch

from lm.basics.embedding import compare, one_hot, tied_pair
from lm.basics.quadratic_loss import GDConfig, closed_form, gradient, gradient_descent, loss


def test_closed_form_by_hand():
    # x mean 610/3, y mean 1300/3; Sxy = sum (x-xm)(y-ym) = 23500, Sxx = 27400/3 ... computed exactly:
    xm, ym = 610 / 3, 1300 / 3
    sxy = sum((x - xm) * (y - ym) for x, y in zip([150, 200, 260], [200, 600, 500]))
    sxx = sum((x - xm) ** 2 for x in [150, 200, 260])
    w, b = closed_form()
    assert w == pytest.approx(sxy / sxx, rel=1e-12)
    assert w == pytest.approx(235 / 91, rel=1e-12)      # 23500 / 9100
    assert b == pytest.approx(ym - w * xm, rel=1e-12)


def test_loss_by_hand():
    # at w=2, b=0: predictions 300, 400, 520 -> errors 100, -200, 20 -> mean square (10000+40000+400)/3
    assert loss(2.0, 0.0) == pytest.approx(50400 / 3)
    assert loss(np.array([2.0, 0.0]), np.array([0.0, 0.0]))[1] == pytest.approx((200**2 + 600**2 + 500**2) / 3)


def test_gradient_matches_finite_differences():
    w, b, h = 1.3, -20.0, 1e-5
    dw, db = gradient(w, b)
    assert dw == pytest.approx((loss(w + h, b) - loss(w - h, b)) / (2 * h), rel=1e-6)
    assert db == pytest.approx((loss(w, b + h) - loss(w, b - h)) / (2 * h), rel=1e-6)


def test_gradient_descent_reaches_closed_form():
    res = gradient_descent()
    w_opt, b_opt = closed_form()
    assert res.converged
    assert abs(res.w - w_opt) / abs(w_opt) < 1e-6
    assert abs(res.b - b_opt) / abs(b_opt) < 1e-6
    assert res.path.shape == (res.steps + 1, 2)
    # the loss never increases along the path with the 1/L step (J is L-smooth and convex)
    js = loss(res.path[:, 0], res.path[:, 1])
    assert np.all(np.diff(js) <= 1e-9 * js[:-1])


def test_unscaled_descent_with_a_large_step_diverges():
    # raw x: the curvature in w is ~2 * mean(x^2) ~ 8.6e4, so any step above ~2.3e-5 blows up
    res = gradient_descent(GDConfig(scale=1.0, lr=1e-3, max_steps=50))
    assert not res.converged
    assert loss(*res.path[-1]) > 1e20 * loss(0.0, 0.0)


def test_embedding_equals_one_hot_linear_exactly():
    m = compare(vocab_size=100, dim=16, batch=64)
    assert m["max_abs_diff_output"] == 0.0
    assert m["max_abs_diff_grad"] == 0.0
    assert m["rows_with_grad"] == m["distinct_ids"] == 64


def test_embedding_with_repeated_ids_equal_up_to_rounding():
    m = compare(vocab_size=20, dim=8, batch=500, repeat_ids=True)
    assert m["max_abs_diff_output"] == 0.0
    assert m["max_abs_diff_grad"] < 1e-5
    assert m["distinct_ids"] <= 20


def test_one_hot_and_tied_weights():
    emb, lin = tied_pair(6, 3)
    assert torch.equal(lin.weight, emb.weight.T)
    x = one_hot(torch.tensor([[1, 5]]), 6)
    assert x.shape == (1, 2, 6) and x.sum().item() == 2.0 and x[0, 1, 5].item() == 1.0
