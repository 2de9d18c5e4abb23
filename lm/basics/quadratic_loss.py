"""Chapter 1.2: a linear model, the quadratic loss J(w, b) and gradient descent.

The book fits f(x) = w x + b to three points (x = 150, 200, 260; y = 200, 600, 500) by minimising
the mean squared error

    J(w, b) = 1/N * sum_i (w x_i + b - y_i)^2

with gradient descent, using the partial derivatives

    dJ/dw = 2/N * sum_i (w x_i + b - y_i) x_i
    dJ/db = 2/N * sum_i (w x_i + b - y_i)

Because J is quadratic, its minimum also has a closed form (least squares):
w* = cov(x, y) / var(x), b* = mean(y) - w* mean(x). We use it as the oracle that gradient descent
must reach.

Raw x values are in the hundreds, so dJ/dw is ~10^4 times more sensitive than dJ/db and a single
learning rate either diverges in w or crawls in b. As the book suggests, we scale the feature
(x / 100 here) and pick the step from the curvature: for J the Hessian is constant,
H = 2/N [[sum x^2, sum x], [sum x, N]], and any step below 2 / lambda_max(H) converges; we use
1 / lambda_max. The path is mapped back to the original (w, b) for reporting and plotting (the
picture of J with the path is drawn by `lm.plots.loss_surface` from what the stage saves).

    >>> res = gradient_descent()
    >>> round(res.w, 4), round(res.b, 2)
    (2.5824, -91.76)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# The book's three (area, price) points.
BOOK_X = np.array([150.0, 200.0, 260.0])
BOOK_Y = np.array([200.0, 600.0, 500.0])


def loss(w: float | np.ndarray, b: float | np.ndarray, x: np.ndarray = BOOK_X, y: np.ndarray = BOOK_Y):
    """J(w, b) = mean((w x + b - y)^2). w and b may be arrays of the same shape (a grid)."""
    w, b = np.asarray(w, dtype=float), np.asarray(b, dtype=float)
    pred = w[..., None] * x + b[..., None]  # (..., N)
    return ((pred - y) ** 2).mean(axis=-1)


def gradient(w: float, b: float, x: np.ndarray = BOOK_X, y: np.ndarray = BOOK_Y) -> tuple[float, float]:
    """(dJ/dw, dJ/db), the book's partial derivatives."""
    err = w * x + b - y  # (N,)
    return float(2 * (err * x).mean()), float(2 * err.mean())


def closed_form(x: np.ndarray = BOOK_X, y: np.ndarray = BOOK_Y) -> tuple[float, float]:
    """The least-squares optimum (w*, b*)."""
    xm, ym = x.mean(), y.mean()
    w = float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())
    return w, float(ym - w * xm)


@dataclass
class GDConfig:
    scale: float = 100.0      # divide x by this before descending (feature scaling); 1.0 = raw x
    lr: float | None = None   # learning rate; None = 1 / largest curvature of J (always converges)
    tol: float = 1e-10        # stop when the gradient's norm (in scaled units) falls below this
    max_steps: int = 100_000  # give up after this many steps


@dataclass
class GDResult:
    w: float                 # fitted slope, in the original units of x
    b: float                 # fitted intercept
    steps: int               # gradient steps taken
    converged: bool          # True if the gradient norm fell below tol
    lr: float                # learning rate used (in scaled units)
    path: np.ndarray = field(repr=False)  # (steps + 1, 2) the (w, b) visited, original units


def gradient_descent(cfg: GDConfig = GDConfig(), x: np.ndarray = BOOK_X, y: np.ndarray = BOOK_Y) -> GDResult:
    """Minimise J by gradient descent on the scaled feature x / cfg.scale, from (w, b) = (0, 0)."""
    xs = x / cfg.scale
    hessian = 2 / len(xs) * np.array([[(xs * xs).sum(), xs.sum()], [xs.sum(), len(xs)]])
    lr = cfg.lr if cfg.lr is not None else 1.0 / np.linalg.eigvalsh(hessian).max()
    w, b = 0.0, 0.0
    path = [(w, b)]
    converged = False
    for step in range(1, cfg.max_steps + 1):
        dw, db = gradient(w, b, xs, y)
        w, b = w - lr * dw, b - lr * db
        path.append((w / cfg.scale, b))
        if not np.isfinite(w) or not np.isfinite(b):
            break  # diverged: the step was too large for this curvature
        if np.hypot(dw, db) < cfg.tol:
            converged = True
            break
    return GDResult(float(w / cfg.scale), float(b), step, converged, float(lr), np.array(path))
