"""Pictures of a run's results (optional: needs matplotlib, `pip install -e '.[plot]'`).

Each function draws one figure from plain data (what the stages leave in their out dirs) and writes
it as a PNG, atomically. `lm/report.py` decides what to draw for which stage; stages draw nothing.

    loss_surface          chapter 1: J(w, b) with the gradient-descent path (quadratic_loss)
    loss_curves           training and validation loss by step, from the engine's metrics.jsonl
    compare_losses        several stages' loss curves on one axis (chapters 3-4: RNN vs decoder)
    perplexity_by_order   the n-gram perplexity table by order n (count_lm)
    sampling_demos        exact vs sampled token distributions for the book's demos (sampling)
    accuracy_curve        accuracy per epoch of a classifier, beside the book's when known
    confusion_matrix      true label x predicted label counts
    grpo_curves           GRPO's reward (per reward function), KL and completion length by step

`available()` says whether matplotlib can be imported; every drawing function needs it.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np

from lm.basics.quadratic_loss import loss
from lm.utils import atomic_open

DPI = 110
BOOK_STYLE = dict(color="0.45", linestyle="--", marker="s", markersize=4, label="the book")


def _pyplot():
    """matplotlib.pyplot with the file-only backend (ImportError if matplotlib is not installed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def available() -> bool:
    """True if matplotlib is installed (the pictures can be drawn)."""
    try:
        _pyplot()
    except ImportError:
        return False
    return True


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=DPI)
    _pyplot().close(fig)
    return path


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


# --------------------------------------------------------------------------------------------
# Chapter 1
# --------------------------------------------------------------------------------------------

def loss_surface(descent: dict, path: str | os.PathLike) -> Path:
    """Contours of log10 J(w, b) with the gradient-descent path and the closed-form optimum.

    `descent`: what stage quadratic_loss writes to descent.json (x, y, path, w/b_closed_form, steps).
    """
    plt = _pyplot()
    x, y = np.asarray(descent["x"], float), np.asarray(descent["y"], float)
    walk = np.asarray(descent["path"], float)                      # (steps + 1, 2): (w, b)
    w_opt, b_opt = descent["w_closed_form"], descent["b_closed_form"]
    ws = np.linspace(min(0, w_opt) - 1, max(0, w_opt) + 1, 200)
    bs = np.linspace(min(0, b_opt) - 300, max(0, b_opt) + 300, 200)
    W, B = np.meshgrid(ws, bs)                                    # (200, 200) each
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    cs = ax.contourf(W, B, np.log10(loss(W, B, x, y)), levels=30, cmap="viridis")
    fig.colorbar(cs, label="log10 J(w, b)")
    ax.plot(walk[:, 0], walk[:, 1], "-", lw=1.8, color="C1", label=f"gradient descent ({descent['steps']:,} steps)")
    first = walk[:30]                                              # the first steps, where it moves most
    ax.plot(first[:, 0], first[:, 1], ".", color="C1", ms=5)
    ax.plot(walk[0, 0], walk[0, 1], "o", color="C1", ms=7, mec="white", label="start (0, 0)")
    ax.plot([w_opt], [b_opt], "*", color="C3", ms=14, label=f"closed form: w={w_opt:.3f}, b={b_opt:.1f}")
    ax.set_xlim(ws[0], ws[-1])
    ax.set_ylim(bs[0], bs[-1])
    ax.set_title("J(w, b) = mean((w x + b - y)^2) on the book's three points", fontsize=10)
    ax.set_xlabel("w (slope)")
    ax.set_ylabel("b (intercept)")
    ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# Training curves
# --------------------------------------------------------------------------------------------

def has_loss(records: list[dict]) -> bool:
    return any("loss" in r or "val_loss" in r for r in records)


def has_rewards(records: list[dict]) -> bool:
    return any("reward_mean" in r for r in records)


def _series(records: list[dict], key: str, x: str = "step") -> tuple[np.ndarray, np.ndarray]:
    pts = [(r[x], r[key]) for r in records if isinstance(r.get(key), (int, float)) and isinstance(r.get(x), (int, float))]
    if not pts:
        return np.array([]), np.array([])
    a = np.array(pts, dtype=float)
    return a[:, 0], a[:, 1]


def loss_curves(records: list[dict], path: str | os.PathLike, title: str) -> Path:
    """Training loss (the engine's running mean per log interval) and validation loss by step; the
    last validation point is labelled with its perplexity, exp(loss), the figure the chapters report."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    xs, ys = _series(records, "loss")
    if len(xs):
        ax.plot(xs, ys, "-", color="C0", lw=1.4, label="training loss")
    vx, vy = _series(records, "val_loss")
    if len(vx):
        ax.plot(vx, vy, "o-" if len(vx) > 1 else "o", color="C3", ms=6, lw=1.4, label="validation loss")
        ax.annotate(f"{vy[-1]:.3f} (perplexity {np.exp(vy[-1]):.2f})", (vx[-1], vy[-1]), textcoords="offset points",
                    xytext=(-8, 10), ha="right", fontsize=8, color="C3")
    _style(ax, title, "optimizer step", "cross-entropy loss (nats)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def compare_losses(curves: dict[str, list[dict]], path: str | os.PathLike, title: str) -> Path:
    """Training loss (lines) and validation loss (dots) of several runs by step, one colour each."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, (label, records) in enumerate(curves.items()):
        xs, ys = _series(records, "loss")
        ax.plot(xs, ys, "-", color=f"C{i}", lw=1.4, label=f"{label}: training")
        vx, vy = _series(records, "val_loss")
        if len(vx):
            ax.plot(vx, vy, "o--" if len(vx) > 1 else "o", color=f"C{i}", ms=6, lw=1,
                    label=f"{label}: validation {vy[-1]:.3f} (perplexity {np.exp(vy[-1]):.2f})")
    _style(ax, title, "optimizer step", "cross-entropy loss (nats)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def grpo_curves(records: list[dict], path: str | os.PathLike, title: str) -> Path:
    """GRPO by step: reward (mean with one std band, and each reward function), KL to the reference
    model, completion length (and the clipped fraction when logged)."""
    plt = _pyplot()
    panels = [("reward", "reward")] + [(k, label) for k, label in
                                      (("kl", "KL to the reference"), ("completion_length", "completion length (tokens)"),
                                       ("clip_fraction", "clipped fraction")) if any(k in r for r in records)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        if key == "reward":
            x, m = _series(records, "reward_mean")
            _, sd = _series(records, "reward_std")
            ax.plot(x, m, "-", color="C0", lw=1.6, label="total (mean)")
            if len(sd) == len(m) and len(m):
                ax.fill_between(x, m - sd, m + sd, color="C0", alpha=0.15, label="± std")
            names = sorted({k for r in records for k in r if k.startswith("reward_") and k not in ("reward_mean", "reward_std")})
            for i, k in enumerate(names):
                kx, ky = _series(records, k)
                ax.plot(kx, ky, "-", lw=1.1, color=f"C{i + 1}", label=k.removeprefix("reward_"))
            ax.legend(fontsize=7)
        else:
            x, y = _series(records, key)
            ax.plot(x, y, "-", color="C2" if key == "kl" else "C4", lw=1.4)
        _style(ax, label, "step", label)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# Chapter 2.5, 5.4
# --------------------------------------------------------------------------------------------

def perplexity_by_order(table: dict, path: str | os.PathLike, book: float | None = None) -> Path:
    """count_lm's test perplexity for n = 1..N: the book's backoff model, the same rescaled to sum
    to 1, and Kneser-Ney (log scale), with the book's printed figure at its n when given."""
    plt = _pyplot()
    n = np.asarray(table["n"])
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for key, label, style in (("book", "the book's backoff model", "o-"),
                              ("book_normalised", "the same, rescaled to sum to 1", "^--"),
                              ("kn", "Kneser-Ney", "s-")):
        if key in table:
            ax.plot(n, table[key], style, lw=1.5, ms=5, label=f"{label} (n={n[-1]}: {table[key][-1]:.2f})")
    if book is not None:
        ax.plot([n[-1] + 0.15], [book], "*", color="0.35", ms=11,       # beside ours, not hiding it
                label=f"the book prints {book:g} (n={n[-1]}, its Brown copy)")
    ax.set_yscale("log")
    ticker = _pyplot().matplotlib.ticker
    ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))   # 300, not 3 x 10^2
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xticks(n)
    _style(ax, "n-gram test perplexity by order", "order n (context of n - 1 words)", "perplexity (log scale)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def sampling_demos(demos: dict, path: str | os.PathLike, draws: int | None = None) -> Path:
    """One panel per demo: the exact distribution `sample_token` draws from (bars) and the
    frequencies of the sampled tokens (dots; `draws` per demo), over the book's eight-word vocabulary."""
    plt = _pyplot()
    names = list(demos)
    cols = 4
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.7 * rows), sharey=True, squeeze=False)
    for ax, name in zip(axes.flat, names):
        d = demos[name]
        words = list(d["probabilities"])
        p = np.array([d["probabilities"][w] for w in words])
        f = np.array([d["frequencies"][w] for w in words])
        ax.bar(range(len(words)), p, color="C0", alpha=0.55, label="exact")
        ax.plot(range(len(words)), f, "o", color="C3", ms=4, label=f"sampled ({draws:,} draws)" if draws else "sampled")
        ax.set_xticks(range(len(words)))
        ax.set_xticklabels(words, rotation=60, fontsize=7)
        ax.set_title(name + "\n" + "\n".join(textwrap.wrap(d.get("setting", ""), 44)), fontsize=7.5)
        ax.text(0.97, 0.95, f"H={d.get('entropy_bits', float('nan')):.2f} bits\nTV={d.get('tv_distance', float('nan')):.3f}",
                transform=ax.transAxes, ha="right", va="top", fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7, loc="center right")
    for r in range(rows):
        axes[r][0].set_ylabel("probability")
    fig.suptitle("the book's sampling demos: logits [2, 1.5, ..., -1.5] over eight words", fontsize=10)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# Classifiers
# --------------------------------------------------------------------------------------------

def vote_tradeoff(by_min_votes: dict, labellers: dict, min_votes: int | None, path: str | os.PathLike,
                  title: str) -> Path:
    """doc_labeling: coverage against accuracy (vs the truth) of the vote at every threshold (votes
    a label needs, joined by a line; the stage's own one ringed), and of each labeller alone."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    rows = sorted(((int(m), r) for m, r in by_min_votes.items() if r.get("accuracy_vs_truth") is not None))
    if rows:
        cov = [r["coverage"] for _, r in rows]
        acc = [r["accuracy_vs_truth"] for _, r in rows]
        ax.plot(cov, acc, "o-", color="C0", lw=1.6, ms=6, label="the vote, by votes needed")
        for (m, _), c, a in zip(rows, cov, acc):
            ax.annotate(f"{m} vote{'s' if m > 1 else ''}", (c, a), textcoords="offset points",
                        xytext=(6, 4 if m % 2 else -12), fontsize=8)          # 1 and 2 votes often coincide
            if m == min_votes:
                ax.plot([c], [a], "o", ms=13, mfc="none", mec="C3", mew=1.6, label=f"used: {m} votes (more than half)")
    for i, (name, m) in enumerate(labellers.items()):
        if m.get("accuracy_vs_truth") is not None:
            ax.plot([m["coverage"]], [m["accuracy_vs_truth"]], "s", color=f"C{i + 2}", ms=7, label=f"{name} alone")
    _style(ax, title, "coverage (share of documents given a label)", "accuracy of the labels given (vs truth)")
    ax.legend(fontsize=7.5, loc="lower left")
    return _save(fig, path)


def accuracy_curve(accuracy: list[float], path: str | os.PathLike, title: str,
                   book: list[float] | None = None, split: str = "eval") -> Path:
    """Accuracy per epoch (on the reported split), beside the book's per-epoch figures when known."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    epochs = np.arange(1, len(accuracy) + 1)
    ax.plot(epochs, accuracy, "o-", color="C0", lw=1.6, ms=5, label=f"this run ({split})")
    ax.annotate(f"{accuracy[-1]:.4f}", (epochs[-1], accuracy[-1]), textcoords="offset points", xytext=(0, 7),
                ha="center", fontsize=8, color="C0")
    if book:
        ax.plot(np.arange(1, len(book) + 1), book, **BOOK_STYLE)
    ax.set_xticks(np.arange(1, max(len(accuracy), len(book or [])) + 1))
    _style(ax, title, "epoch", "accuracy")
    ax.legend(fontsize=8)
    return _save(fig, path)


def confusion_matrix(confusion: dict, path: str | os.PathLike, title: str) -> Path:
    """Counts of (true label, predicted label); colour is the share of each true label's row."""
    plt = _pyplot()
    labels = [str(x) for x in confusion["labels"]]
    m = np.asarray(confusion["matrix"], dtype=float)               # (L, L): rows true, columns predicted
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    size = max(3.8, 0.55 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size + 0.8, size))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true label's items")
    if len(labels) <= 20:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if m[i, j]:
                    ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=8,
                            color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(m) / max(m.sum(), 1)
    ax.set_title(f"{title}\naccuracy {accuracy:.4f} on {int(m.sum()):,} items", fontsize=10)
    return _save(fig, path)
