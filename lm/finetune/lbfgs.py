"""L-BFGS: the full-batch quasi-Newton minimiser behind `LogisticRegression` (scikit-learn's default solver).

Gradient descent steps along -g; Newton's method along -H^-1 g, which needs the Hessian H. L-BFGS
keeps the last `history` steps s = x_new - x and gradient changes y = g_new - g and from them
builds H^-1 g implicitly (the "two-loop recursion", Nocedal & Wright, Numerical Optimization,
algorithm 7.4), at the cost of a few dot products over the parameter vector:

    q = g
    for (s, y) newest to oldest:   a = (s.q) / (y.s);  q -= a y
    r = q * (s.y / y.y) of the newest pair          # the initial Hessian guess: a scaled identity
    for (s, y) oldest to newest:   b = (y.r) / (y.s);  r += s (a - b)
    direction = -r

A backtracking line search (Armijo: f(x + t d) <= f(x) + 1e-4 t g.d, halving-or-interpolating t
from 1) picks the step. For a convex objective such as L2-regularised logistic regression, any
step that lowers f has s.y >= 0, so the curvature pairs stay valid without a full Wolfe search;
a pair with s.y ~ 0 is skipped.

Stops when the gradient's largest component is at most `tol` (scipy's `gtol`, which scikit-learn
passes its `tol` to), or after `max_iter` iterations, or when no step lowers f any more (the
objective's floating-point floor: for f ~ 1 in float64, gradients much below ~1e-8 are out of reach).

    >>> f = lambda x: (float(((x - 3) ** 2).sum()), 2 * (x - 3))
    >>> r = minimize_lbfgs(f, torch.zeros(4, dtype=torch.float64), tol=1e-8)
    >>> r.converged, round(float(r.x[0]), 6)
    (True, 3.0)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from lm.errors import ConfigError


@dataclass
class LBFGSResult:
    x: torch.Tensor        # the minimiser found
    f: float               # objective value at x
    grad_norm: float       # largest absolute gradient component at x
    iterations: int        # L-BFGS iterations (directions tried)
    evaluations: int       # calls of the objective (line-search trials included)
    converged: bool        # True if grad_norm <= tol
    message: str           # why it stopped


def _two_loop(g: torch.Tensor, S: list, Y: list, rho: list) -> torch.Tensor:
    """-H^-1 g from the stored (s, y) pairs (oldest first); -g when none are stored yet."""
    q = g.clone()
    alphas = []
    for s, y, r in zip(reversed(S), reversed(Y), reversed(rho)):
        a = r * float(torch.dot(s, q))
        q.sub_(y, alpha=a)
        alphas.append(a)
    if S:
        q.mul_(float(torch.dot(S[-1], Y[-1]) / torch.dot(Y[-1], Y[-1])))
    for s, y, r, a in zip(S, Y, rho, reversed(alphas)):
        b = r * float(torch.dot(y, q))
        q.add_(s, alpha=a - b)
    return q.neg_()


def minimize_lbfgs(fun: Callable[[torch.Tensor], tuple[float, torch.Tensor]], x0: torch.Tensor, *,
                   tol: float = 1e-5, max_iter: int = 1000, history: int = 10,
                   history_dtype: torch.dtype | None = None, max_line_search: int = 40) -> LBFGSResult:
    """Minimise `fun` from `x0`: fun(x) -> (value, gradient with x's shape), x a 1-D tensor.

    tol: stop when max |gradient component| <= tol. history: (s, y) pairs kept (scipy's m = 10).
    history_dtype: dtype the pairs are stored and the direction computed in (None: x0's). With
    many parameters the two-loop recursion's passes over the history dominate an iteration;
    float32 halves their memory traffic, and the direction only has to point downhill (the line
    search, in x0's dtype, checks that each step really lowers f).
    """
    if x0.dim() != 1:
        raise ConfigError(f"minimize_lbfgs needs a 1-D starting point, got shape {tuple(x0.shape)}")
    if tol <= 0 or max_iter < 0 or history < 1:
        raise ConfigError(f"minimize_lbfgs: need tol > 0, max_iter >= 0, history >= 1 "
                          f"(got {tol}, {max_iter}, {history})")
    hist = history_dtype or x0.dtype
    x = x0.clone()
    f, g = fun(x)
    evals, it = 1, 0
    S: list[torch.Tensor] = []
    Y: list[torch.Tensor] = []
    rho: list[float] = []
    gmax = float(g.abs().max()) if g.numel() else 0.0
    message = "max_iter reached"
    while True:
        if gmax <= tol:
            message = "gradient below tol"
            break
        if it >= max_iter:
            break
        d = _two_loop(g.to(hist), S, Y, rho).to(g.dtype)
        gd = float(torch.dot(g, d))
        if gd >= 0:  # not a descent direction (can only happen from rounding): restart from -g
            S, Y, rho = [], [], []
            d, gd = -g, -float(torch.dot(g, g))
        # first iteration: a unit-length step along -g; afterwards the quasi-Newton step t = 1
        t = min(1.0, 1.0 / float(g.abs().sum())) if not S else 1.0
        for _ in range(max_line_search):
            x_new = torch.add(x, d, alpha=t)
            f_new, g_new = fun(x_new)
            evals += 1
            if f_new <= f + 1e-4 * t * gd:
                break
            # minimiser of the quadratic through f, the slope gd and f_new, kept within [0.1 t, 0.5 t]
            t_quad = -gd * t * t / (2.0 * (f_new - f - gd * t)) if f_new - f - gd * t > 0 else 0.5 * t
            t = min(max(t_quad, 0.1 * t), 0.5 * t)
        else:
            message = "line search found no decrease (at the objective's rounding floor)"
            break
        if f_new >= f:   # accepted only because f + 1e-4 t g.d rounds to f: nothing left to gain
            message = "no decrease (at the objective's rounding floor)"
            break
        it += 1
        s, y = x_new - x, g_new - g
        sy = float(torch.dot(s, y))
        if sy > 1e-12 * float(torch.dot(y, y)):
            S.append(s.to(hist)), Y.append(y.to(hist)), rho.append(1.0 / sy)
            if len(S) > history:
                S.pop(0), Y.pop(0), rho.pop(0)
        x, f, g = x_new, f_new, g_new
        gmax = float(g.abs().max())
    return LBFGSResult(x=x, f=float(f), grad_norm=gmax, iterations=it, evaluations=evals,
                       converged=gmax <= tol, message=message)
