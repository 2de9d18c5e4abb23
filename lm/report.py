"""A run's report: OUT/report.md shows a whole run in one file, the results beside the book's.

    python -m lm.report runs/20260101-120000      # (re)build report.md and its pictures from a run folder

run_all.py writes it at the end of every run; this command rebuilds it from any run folder (for
instance after `pip install -e '.[plot]'`). It reads only what the run left behind:
`summary.json` (every stage's status and metrics) and, in each stage's folder, the engine's
`metrics.jsonl` files and the stages' own result files. What gets drawn is decided by what is
there, not by the stage's name, so a new stage gets its pictures by following the conventions:

    any metrics.jsonl under OUT/<stage>/   records with loss / val_loss   -> training and validation loss
                                           records with reward_mean      -> GRPO reward, KL, length
    metrics["perplexity_table"]            n-gram perplexity by order
    metrics["accuracy_per_epoch"]          accuracy per epoch (beside the book's, when it printed them)
    metrics["confusion"]                   confusion matrix {"labels": [...], "matrix": [[...]]}
    OUT/<stage>/demos.json                 the sampling demos' distributions
    OUT/<stage>/descent.json               chapter 1's loss surface and descent path

The pictures go to OUT/plots/ (matplotlib needed; without it the report says how to get them).
The book's figures are in `BOOK` (from the book's notebooks, ../shared/BOOK_NOTEBOOKS.md).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lm import plots
from lm.data.loaders import EMBEDDED_DIR
from lm.stages import STAGE_NAMES, load_stage
from lm.utils import atomic_write_text

# stage -> metric -> (the book's figure as it printed it, what it was measured on). Percentages
# are written as fractions (23.33 % -> "0.2333"); ours are shown with the same number of decimals.
BOOK: dict[str, dict[str, tuple[str, str]]] = {
    "bpe": {"vocab_size": ("5000", "500,000 words of the book's news corpus")},
    "count_lm": {"perplexity_book": ("299.06", "n = 5 on the book's copy of Brown, 90/10 token split")},
    "rnn_lm": {"val_perplexity": ("72.41", "whole news corpus, Phi-3.5 tokenizer (32k), batch 128, 1 epoch")},
    "decoder_lm": {"val_perplexity": ("55.19", "same data and budget as the RNN")},
    "emotion_lr": {"accuracy": ("0.8855", "10k binary unigrams, its 2,000-item test split"),
                   "accuracy_bigram": ("0.8910", "20k uni+bigram counts")},
    "emotion_cnn": {"accuracy": ("0.9055", "300-d word2vec (GoogleNews), 2 epochs")},
    "emotion_sft": {"accuracy": ("0.9415", "GPT-2 124M fine-tuned as a generator, 2 epochs")},
    "emotion_lora": {"accuracy": ("0.9420", "GPT-2 124M with LoRA r=16, 18 epochs")},
    "emotion_classifier": {"accuracy": ("0.9460", "GPT-2 124M with a classification head, 8 epochs")},
    "instruct_sft": {"loss_per_epoch": ("0.4222", "mean training loss of the 4th (last) epoch, GPT-2 124M")},
    "doc_labeling": {"accuracy": ("0.7931", "roberta-base on LLM labels, 38 classes, 435 test items")},
}
BOOK["grpo"] = BOOK["grpo_ddp"] = {   # the book's GRPO result (its data-parallel notebook)
    "accuracy_before": ("0.2333", "Qwen2.5-1.5B-Instruct, 30 held-out GSM8K train items, before GRPO"),
    "accuracy_after": ("0.9000", "the same items after 500 GRPO steps"),
    "reward_last": ("2.25", "mean reward of steps 401-500 (at most 2.8)"),
}

# The book's accuracy after each epoch (test split), drawn beside ours.
BOOK_PER_EPOCH: dict[str, list[float]] = {
    "emotion_cnn": [0.8830, 0.9055],
    "emotion_sft": [0.9305, 0.9415],
    "emotion_lora": [0.7605, 0.7970, 0.8530, 0.8985, 0.9175, 0.9215, 0.9260, 0.9260, 0.9330,
                     0.9315, 0.9325, 0.9345, 0.9265, 0.9375, 0.9380, 0.9390, 0.9370, 0.9420],
    "emotion_classifier": [0.9230, 0.9310, 0.9410, 0.9395, 0.9340, 0.9395, 0.9400, 0.9460],
}

# Stages whose training curves belong on one picture: (stages, what the picture shows).
COMPARE = [(("rnn_lm", "decoder_lm"), "chapters 3-4, RNN vs decoder: same data, tokenizer and token budget")]

NO_PICTURES = "pictures not drawn: matplotlib is not installed (pip install -e '.[plot]', then python -m lm.report {run})"


@dataclass
class Report:
    path: Path                                                  # OUT/report.md
    pictures: list[Path] = field(default_factory=list)          # the PNGs drawn (and linked)
    note: str = ""                                              # why there are none, if so


# --------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------

def format_value(v) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def format_metrics(metrics: dict, keys: list[str] | None, limit: int = 3) -> str:
    """`key=value` for the stage's KEY_METRICS (else its first `limit` numbers), as in run_all's table.

    >>> format_metrics({"val_perplexity": 2.57312, "tokens": 456160, "samples": {}}, None)
    'val_perplexity=2.573 tokens=456160'
    """
    keys = keys or [k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)][:limit]
    return " ".join(f"{k}={format_value(metrics[k])}" for k in keys if k in metrics)


def _like(ours, book: str) -> str:
    """`ours` with as many decimals as the book printed (`book`, e.g. "299.06"); a list: its last value."""
    if isinstance(ours, list) and ours:
        ours = ours[-1]
    if isinstance(ours, bool) or not isinstance(ours, (int, float)):
        return "—" if ours is None else str(ours)
    decimals = len(book.split(".")[1]) if "." in book else 0
    return f"{ours:,.{decimals}f}"


# --------------------------------------------------------------------------------------------
# Reading a run
# --------------------------------------------------------------------------------------------

def read_jsonl(path: Path) -> list[dict]:
    """The records of a metrics.jsonl written by the latest run into it (the engine appends, so a
    second run into the same folder starts again at a lower step); a line cut short is skipped."""
    out: list[dict] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        step, last = rec.get("step"), out[-1].get("step") if out else None
        if isinstance(step, (int, float)) and isinstance(last, (int, float)) and step < last:
            out = []                                    # an earlier run's records end here
        out.append(rec)
    return out


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _key_metrics(name: str) -> list[str] | None:
    try:
        return getattr(load_stage(name), "KEY_METRICS", None)
    except Exception:   # a broken stage module must not stop the report
        return None


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------

def draw_stage(run_dir: Path, name: str, entry: dict, plot_dir: Path, real_data: bool = True) -> list[tuple[str, Path]]:
    """Every picture the stage's results allow: [(caption, png path)]. `real_data`: False on the
    embedded toy data, where the book's perplexity (on real Brown) is not drawn beside ours."""
    stage_dir = run_dir / name
    metrics = entry.get("metrics") or {}
    drawn: list[tuple[str, Path]] = []

    def out(kind: str) -> Path:
        return plot_dir / f"{name}_{kind}.png"

    descent = _read_json(stage_dir / "descent.json") if (stage_dir / "descent.json").is_file() else None
    if isinstance(descent, dict) and "path" in descent:
        drawn.append(("J(w, b) and the gradient-descent path", plots.loss_surface(descent, out("descent"))))
    if isinstance(metrics.get("perplexity_table"), dict):
        book = BOOK.get(name, {}).get("perplexity_book", (None,))[0]
        book = float(book) if book is not None and real_data else None
        drawn.append(("test perplexity by n-gram order", plots.perplexity_by_order(metrics["perplexity_table"],
                                                                                    out("perplexity"), book)))
    demos = _read_json(stage_dir / "demos.json") if (stage_dir / "demos.json").is_file() else None
    if isinstance(demos, dict) and isinstance(demos.get("demos"), dict):
        drawn.append(("exact and sampled distributions of the book's demos",
                      plots.sampling_demos(demos["demos"], out("demos"), metrics.get("draws_per_demo"))))
    logs = sorted(stage_dir.rglob("metrics.jsonl")) if stage_dir.is_dir() else []
    for log in logs:
        records = read_jsonl(log)
        rel = log.parent.relative_to(stage_dir)
        tag = "" if rel == Path(".") else "_" + "_".join(rel.parts)
        where = "" if rel == Path(".") else f" ({rel.as_posix()})"
        if plots.has_rewards(records):      # GRPO (its surrogate loss is no cross-entropy: not drawn as one)
            drawn.append((f"GRPO: reward, KL and completion length{where}",
                          plots.grpo_curves(records, out(f"grpo{tag}"), f"{name}{where}")))
        elif plots.has_loss(records):
            drawn.append((f"training and validation loss{where}",
                          plots.loss_curves(records, out(f"loss{tag}"), f"{name}{where}: training and validation loss")))
    if isinstance(metrics.get("by_min_votes"), dict) and isinstance(metrics.get("labellers"), dict):
        drawn.append(("coverage and accuracy of the vote at every threshold, and of each labeller alone",
                      plots.vote_tradeoff(metrics["by_min_votes"], metrics["labellers"], metrics.get("min_votes"),
                                          out("vote"), f"{name}: what the vote threshold trades")))
    acc = metrics.get("accuracy_per_epoch")
    if isinstance(acc, list) and acc and all(isinstance(a, (int, float)) for a in acc):
        split = metrics.get("eval_split", "eval")
        drawn.append((f"accuracy per epoch ({split} split)",
                      plots.accuracy_curve(acc, out("accuracy"), f"{name}: accuracy per epoch", BOOK_PER_EPOCH.get(name),
                                           split)))
    conf = metrics.get("confusion")
    if isinstance(conf, dict) and "labels" in conf and "matrix" in conf:
        drawn.append(("confusion matrix (rows: true label, columns: predicted)",
                      plots.confusion_matrix(conf, out("confusion"), f"{name}: confusion matrix")))
    return drawn


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------

def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_report(run_dir: str | Path, pictures: bool = True) -> Report:
    """Write RUN/report.md (and RUN/plots/*.png when matplotlib is installed) from RUN/summary.json."""
    run_dir = Path(run_dir)
    summary = _read_json(run_dir / "summary.json")
    if not isinstance(summary, dict) or not isinstance(summary.get("stages"), dict):
        raise FileNotFoundError(f"{run_dir / 'summary.json'}: missing or not a run summary (is {run_dir} a run folder?)")
    stages: dict = summary["stages"]
    real_data = summary.get("data_dir") is None or Path(summary["data_dir"]).resolve() != EMBEDDED_DIR.resolve()
    report = Report(run_dir / "report.md")
    draw = pictures and plots.available()
    if not draw:
        report.note = NO_PICTURES.format(run=run_dir) if pictures else "pictures not asked for"
    plot_dir = run_dir / "plots"
    if draw:
        plot_dir.mkdir(exist_ok=True)
        for old in plot_dir.glob("*.png"):     # ours: redrawn below, so no stale picture survives
            old.unlink()

    lines = [f"# Run report: `{run_dir}`", ""]
    base = summary.get("model") or summary.get("gpt2")        # --model (older runs: --gpt2)
    facts = [("status", f"{summary.get('status', '?')} (exit {summary.get('exit_code', '?')})"),
             ("sizes", "quick" if summary.get("quick", True) else "full"), ("seed", summary.get("seed")),
             ("data", f"`{summary.get('data_dir')}`"), ("torch threads", summary.get("threads")),
             ("base model", f"`{base}`" if base else "the small GPT-2s trained in this run"),
             ("started", summary.get("started")), ("finished", summary.get("finished"))]
    lines += [" · ".join(f"{k}: {v}" for k, v in facts if v is not None), ""]

    lines += ["## Results", "", "| stage | status | seconds | key metrics |", "|---|---|---:|---|"]
    names = [n for n in STAGE_NAMES if n in stages] + [n for n in stages if n not in STAGE_NAMES]
    for name in STAGE_NAMES + names[len([n for n in STAGE_NAMES if n in stages]):]:
        if name not in stages:
            lines.append(f"| {name} | not in this run | | |")
            continue
        e = stages[name]
        if e.get("status") == "failed":
            shown = (e.get("error") or "").splitlines()[0] if e.get("error") else ""
        elif e.get("status") == "skipped":
            shown = e.get("note", "")
        else:
            shown = format_metrics(e.get("metrics") or {}, _key_metrics(name))
        lines.append(f"| {name} | {e.get('status')} | {e.get('seconds', 0):.1f} | {_cell(shown)} |")

    changed = [(n, (stages[n].get("metrics") or {}).get("what_changed")) for n in names]
    changed = [(n, text) for n, text in changed if isinstance(text, str) and text]
    if changed:                                                 # GRPO's stages say what the run changed
        lines += ["", "## What changed", ""] + [f"- **{n}**: {_cell(text)}" for n, text in changed]

    for name in names:                                          # doc_labeling: each labeller and the vote
        m = stages[name].get("metrics") or {}
        if isinstance(m.get("labellers"), dict) and m["labellers"]:
            lines += ["", f"## Labellers ({name})", "",
                      "| labeller | coverage | accuracy vs truth | accuracy on the labelled documents |",
                      "|---|---:|---:|---:|"]
            for lab, r in m["labellers"].items():
                lines.append(f"| {_cell(lab)} | {format_value(r.get('coverage'))} | "
                             f"{format_value(r.get('accuracy_vs_truth', '-'))} | {format_value(r.get('accuracy_on_labelled', '-'))} |")
            if m.get("min_votes") is not None:
                lines.append(f"| the vote ({m['min_votes']} votes) | {format_value(m.get('coverage'))} | | "
                             f"{format_value(m.get('ensemble_accuracy_vs_truth', '-'))} |")

    book_rows = []
    for name in names:
        for key, (value, what) in BOOK.get(name, {}).items():
            ours = (stages[name].get("metrics") or {}).get(key)
            book_rows.append(f"| {name} | {key} | {_like(ours, value)} | {_like(float(value), value)} | {_cell(what)} |")
    if book_rows:
        lines += ["", "## Beside the book", "",
                  "The book's figures come from its notebooks, on its data and models; this run's come from "
                  "the data and sizes above, so they agree where the setting is the same."
                  + ("" if real_data else " **This run used the embedded toy data** (a small invented world): "
                     "its numbers do not compare with the book's; run with `--data-dir` on the real data for that."),
                  "",
                  "| stage | metric | this run | the book | the book's setting |", "|---|---|---:|---:|---|"]
        lines += book_rows

    lines += ["", "## Pictures", ""]
    if not draw:
        lines += [f"> {report.note}", ""]
    for name in names:
        e = stages[name]
        drawn = []
        if draw:
            try:
                drawn = draw_stage(run_dir, name, e, plot_dir, real_data)
            except Exception as err:   # a picture must never cost the report
                lines += [f"### {name}", "", f"> could not draw: {type(err).__name__}: {err}", ""]
                continue
        if not drawn and e.get("status") == "ok":
            continue
        lines += [f"### {name}", ""]
        if e.get("status") != "ok":
            lines += [f"> {e.get('status')}" + (f": {_cell(e['error'].splitlines()[0])}" if e.get("error") else ""), ""]
        for caption, png in drawn:
            report.pictures.append(png)
            lines += [f"![{name}: {caption}]({png.relative_to(run_dir).as_posix()})", ""]
    if draw:
        for group, what in COMPARE:
            logs = {n: run_dir / n / "metrics.jsonl" for n in group}
            if all(n in stages and logs[n].is_file() for n in group):
                png = plots.compare_losses({n: read_jsonl(p) for n, p in logs.items()},
                                           plot_dir / f"{'_vs_'.join(group)}.png", what)
                report.pictures.append(png)
                lines += [f"### {' vs '.join(group)}", "", f"![{what}]({png.relative_to(run_dir).as_posix()})", ""]
    atomic_write_text(report.path, "\n".join(lines).rstrip() + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lm.report",
                                description="(Re)build OUT/report.md and its pictures from a run folder of run_all.py.")
    p.add_argument("run_dir", help="the run folder (holding summary.json), e.g. runs/20260101-120000")
    p.add_argument("--no-pictures", action="store_true", help="write the report without drawing pictures")
    args = p.parse_args(argv)
    try:
        report = write_report(args.run_dir, pictures=not args.no_pictures)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {report.path} ({len(report.pictures)} pictures)")
    if report.note:
        print(report.note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
