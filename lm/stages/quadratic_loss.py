"""Stage quadratic_loss (chapter 1.2): gradient descent on J(w, b) reaches the least-squares optimum.

The descent path goes to `descent.json`; the report (`lm/report.py`) draws J's contours with it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lm.basics.quadratic_loss import BOOK_X, BOOK_Y, GDConfig, closed_form, gradient_descent, loss
from lm.stages import RunConfig, quick_full
from lm.utils import atomic_write_json, say

KEY_METRICS = ["w", "b", "steps", "rel_error"]
DATA_FILES: list[str] = []    # the book's three points are in the code
NEEDS_GPT2 = False


@dataclass
class Settings:
    max_steps: int = quick_full(100_000, 100_000)   # gradient-descent steps at most (the book's 3 points need ~3,600)


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:
    res = gradient_descent(GDConfig(max_steps=s.max_steps))
    w_opt, b_opt = closed_form()
    rel = max(abs(res.w - w_opt) / abs(w_opt), abs(res.b - b_opt) / abs(b_opt))
    say(f"gradient descent: w={res.w:.6f} b={res.b:.4f} after {res.steps} steps (lr {res.lr:.4g} on x/100)")
    say(f"closed form:      w={w_opt:.6f} b={b_opt:.4f}   relative error {rel:.2e}")
    atomic_write_json(out_dir / "descent.json", {
        "x": BOOK_X.tolist(), "y": BOOK_Y.tolist(), "w_closed_form": w_opt, "b_closed_form": b_opt,
        "steps": res.steps, "path": res.path.tolist()}, indent=None)   # (steps + 1) x (w, b)
    return {"w": res.w, "b": res.b, "w_closed_form": w_opt, "b_closed_form": b_opt, "steps": res.steps,
            "converged": res.converged, "rel_error": rel, "final_loss": float(loss(res.w, res.b))}
