"""lm.report and lm.plots: report.md lists every stage, beside the book, and links only pictures that exist."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from lm import plots
from lm.basics.quadratic_loss import closed_form
from lm.data.loaders import EMBEDDED_DIR
from lm.report import BOOK, NO_PICTURES, _like, format_metrics, main, write_report
from lm.stages import STAGE_NAMES, RunConfig
from lm.stages import quadratic_loss as quadratic_stage
from lm.stages.sampling import DEMOS, run_demo
from lm.utils import atomic_write_json

needs_matplotlib = pytest.mark.skipif(not plots.available(), reason="matplotlib is not installed")
PNG = b"\x89PNG\r\n\x1a\n"


def jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run folder as run_all leaves it: one stage of every kind the report draws, a failure, a skip."""
    run = tmp_path / "run"
    quadratic_stage.run(RunConfig(), quadratic_stage.Settings(), Path("."), (run / "quadratic_loss"))
    rng = np.random.default_rng(0)
    demos = {name: {"setting": desc, **run_demo(params, 200, rng)} for name, desc, params in DEMOS}
    atomic_write_json(run / "sampling" / "demos.json", {"demos": demos, "errors": {}, "model_samples": {}})
    jsonl(run / "rnn_lm" / "metrics.jsonl",
          [{"step": s, "loss": 6.0 / (1 + s / 50), "lr": 1e-3} for s in range(10, 501, 10)]
          + [{"step": 500, "val_loss": 1.1, "val_perplexity": 3.0}])
    (run / "rnn_lm" / "metrics.jsonl").open("a").write('{"step": 510, "lo')     # a line cut by Ctrl-C
    jsonl(run / "decoder_lm" / "metrics.jsonl",
          [{"step": s, "loss": 5.0 / (1 + s / 30)} for s in range(10, 501, 10)] + [{"step": 500, "val_loss": 0.6}])
    jsonl(run / "grpo" / "policy" / "metrics.jsonl",
          [{"step": s, "reward_mean": 1 + s / 100, "reward_std": 0.3, "kl": s / 1e3, "completion_length": 200 - s,
            "clip_fraction": 0.01, "reward_format": 0.5 + s / 400, "reward_correctness": 0.5 + s / 200,
            "loss": 0.001, "tokens_per_s": 100.0} for s in range(1, 101)])
    labels = ["sadness", "joy", "love", "anger", "fear", "surprise"]
    matrix = (np.eye(6) * 50 + rng.integers(0, 5, (6, 6))).astype(int).tolist()
    stages = {
        "quadratic_loss": {"status": "ok", "seconds": 0.3, "metrics": {"w": 2.58, "b": -91.8, "steps": 3559,
                                                                        "rel_error": 1e-11}},
        "bpe": {"status": "failed", "seconds": 1.0, "metrics": {}, "error": "DataError: news/train.txt: empty file",
                "error_type": "DataError"},
        "count_lm": {"status": "ok", "seconds": 2.0, "metrics": {
            "n": 5, "perplexity_book": 295.3745, "perplexity_kn": 491.2,
            "perplexity_table": {"n": [1, 2, 3, 4, 5], "book": [1237.6, 392.7, 300.1, 296.0, 295.4],
                                 "book_normalised": [1237.6, 615.2, 700.0, 800.0, 850.0],
                                 "kn": [1221.5, 531.7, 495.0, 492.0, 491.2]}}},
        "rnn_lm": {"status": "ok", "seconds": 20.0, "metrics": {"val_perplexity": 3.0, "tokens": 1000}},
        "decoder_lm": {"status": "ok", "seconds": 25.0, "metrics": {"val_perplexity": 1.82, "tokens": 1000}},
        "sampling": {"status": "interrupted", "seconds": 3.0, "metrics": {}},
        "emotion_lr": {"status": "skipped", "seconds": 0.0, "metrics": {}, "note": "not implemented"},
        "emotion_cnn": {"status": "ok", "seconds": 9.0, "metrics": {
            "accuracy": 0.8712, "accuracy_per_epoch": [0.84, 0.8712], "eval_split": "test",
            "confusion": {"labels": labels, "matrix": matrix}}},
        "grpo": {"status": "ok", "seconds": 30.0, "metrics": {"accuracy_before": 0.1, "accuracy_after": 0.5}},
    }
    atomic_write_json(run / "summary.json", {"data_dir": "/real/data", "quick": True, "seed": 0, "threads": 2,
                                             "status": "interrupted", "exit_code": 130, "stages": stages})
    return run


def linked(report_md: Path) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report_md.read_text())


def table_rows(report_md: Path) -> dict[str, str]:
    rows = {}
    for line in report_md.read_text().split("## Beside the book")[0].splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] in STAGE_NAMES:
            rows[cells[0]] = cells[1]
    return rows


@needs_matplotlib
def test_report_lists_every_stage_and_links_only_pictures_that_exist(run_dir):
    (run_dir / "plots").mkdir()
    (run_dir / "plots" / "stale.png").write_bytes(PNG)                  # from an earlier build: must go
    report = write_report(run_dir)
    md = report.path
    assert md == run_dir / "report.md" and report.note == ""
    rows = table_rows(md)
    assert list(rows) == STAGE_NAMES                                    # every stage, in book order
    assert rows["bpe"] == "failed" and rows["sampling"] == "interrupted" and rows["emotion_lr"] == "skipped"
    assert rows["emotion_sft"] == "not in this run"
    links = linked(md)
    assert sorted(links) == sorted(p.relative_to(run_dir).as_posix() for p in report.pictures)
    for link in links:
        assert (run_dir / link).read_bytes()[:8] == PNG, link
    assert sorted(Path(link).name for link in links) == sorted([
        "quadratic_loss_descent.png", "count_lm_perplexity.png", "rnn_lm_loss.png", "emotion_cnn_accuracy.png",
        "emotion_cnn_confusion.png", "grpo_grpo_policy.png", "sampling_demos.png",   # drawn also when interrupted
        "decoder_lm_loss.png", "rnn_lm_vs_decoder_lm.png"])
    assert not (run_dir / "plots" / "stale.png").exists()
    text = md.read_text()
    assert "> failed: DataError: news/train.txt: empty file" in text and "> interrupted" in text


def test_beside_the_book(run_dir):
    report = write_report(run_dir, pictures=False)
    text = report.path.read_text()
    assert "| count_lm | perplexity_book | 295.37 | 299.06 |" in text          # ours to the book's precision
    assert "| emotion_cnn | accuracy | 0.8712 | 0.9055 |" in text
    assert "| emotion_lr | accuracy | — | 0.8855 |" in text                   # not run: the book's figure still shown
    assert "| grpo | accuracy_after | 0.5000 | 0.9000 |" in text
    assert "| decoder_lm | val_perplexity | 1.82 | 55.19 |" in text
    assert "emotion_sft | accuracy" not in text                               # not in this run
    assert "embedded toy data" not in text


def test_on_the_toy_data_the_report_says_the_book_does_not_compare(run_dir):
    s = json.loads((run_dir / "summary.json").read_text())
    atomic_write_json(run_dir / "summary.json", {**s, "data_dir": str(EMBEDDED_DIR)})
    text = write_report(run_dir, pictures=False).path.read_text()
    assert "**This run used the embedded toy data**" in text and "do not compare with the book's" in text
    assert BOOK["rnn_lm"]["val_perplexity"][0] == "72.41" and BOOK["decoder_lm"]["val_perplexity"][0] == "55.19"


@pytest.mark.parametrize("given, shown", [
    ({}, "base model: the small GPT-2s trained in this run"),
    ({"model": "/w/qwen", "gpt2": None}, "base model: `/w/qwen`"),                # --model (or its alias --gpt2)
    ({"model": None, "gpt2": "/w/gpt2"}, "base model: `/w/gpt2`"),               # a run made before the alias
])
def test_the_report_names_the_base_model_the_run_was_given(run_dir, given, shown):
    s = json.loads((run_dir / "summary.json").read_text())
    atomic_write_json(run_dir / "summary.json", {**s, **given})
    facts = write_report(run_dir, pictures=False).path.read_text().splitlines()[2]
    assert shown in facts and facts.count("base model") == 1


def test_without_matplotlib_the_report_says_how_and_links_nothing(run_dir, monkeypatch):
    (run_dir / "plots").mkdir()
    (run_dir / "plots" / "old.png").write_bytes(PNG)
    monkeypatch.setitem(sys.modules, "matplotlib", None)                      # as if not installed
    assert not plots.available()
    report = write_report(run_dir)
    assert report.pictures == [] and report.note == NO_PICTURES.format(run=run_dir)
    assert linked(report.path) == []
    assert f"> {report.note}" in report.path.read_text()
    assert "pip install -e '.[plot]', then python -m lm.report " + str(run_dir) in report.note
    assert list(table_rows(report.path)) == STAGE_NAMES


@needs_matplotlib
def test_a_picture_that_cannot_be_drawn_costs_only_itself(run_dir):
    s = json.loads((run_dir / "summary.json").read_text())
    s["stages"] = {k: s["stages"][k] for k in ("count_lm", "emotion_cnn")}       # two stages: a quick test
    s["stages"]["emotion_cnn"]["metrics"]["confusion"] = {"labels": ["a"], "matrix": [["x", "y"]]}
    atomic_write_json(run_dir / "summary.json", s)
    report = write_report(run_dir)
    text = report.path.read_text()
    assert "### emotion_cnn\n\n> could not draw: ValueError" in text
    assert linked(report.path) == ["plots/count_lm_perplexity.png"]


def test_command_line(run_dir, tmp_path, capsys):
    assert main([str(run_dir), "--no-pictures"]) == 0
    assert f"report: {run_dir / 'report.md'} (0 pictures)" in capsys.readouterr().out
    assert main([str(tmp_path / "nothing")]) == 2
    assert "summary.json: missing or not a run summary" in capsys.readouterr().err


def test_format_helpers():
    assert format_metrics({"a": 1.234567, "b": 2, "c": "x", "d": True}, None) == "a=1.235 b=2"
    assert format_metrics({"a": 1.0, "b": 2}, ["b", "missing"]) == "b=2"
    assert _like(295.3745, "299.06") == "295.37" and _like(0.87, "0.9055") == "0.8700"
    assert _like([1.5, 0.41234], "0.4222") == "0.4123" and _like(None, "1.0") == "—" and _like(5001, "5000") == "5,001"


@needs_matplotlib
def test_loss_surface_from_the_stage_output(tmp_path):
    out = tmp_path / "q"
    metrics = quadratic_stage.run(RunConfig(), quadratic_stage.Settings(), Path("."), out)
    descent = json.loads((out / "descent.json").read_text())
    assert len(descent["path"]) == metrics["steps"] + 1
    assert descent["path"][-1] == pytest.approx([metrics["w"], metrics["b"]])
    assert (descent["w_closed_form"], descent["b_closed_form"]) == pytest.approx(closed_form())
    png = plots.loss_surface(descent, tmp_path / "p.png")
    assert png.read_bytes()[:8] == PNG


def test_read_jsonl_keeps_the_latest_run(tmp_path):
    from lm.report import read_jsonl
    path = tmp_path / "metrics.jsonl"
    jsonl(path, [{"step": 10, "loss": 3.0}, {"step": 20, "loss": 2.0}, {"step": 20, "val_loss": 2.5},
                 {"step": 10, "loss": 9.0}, {"step": 20, "loss": 8.0}])
    with open(path, "a") as f:
        f.write('{"step": 30, "lo')                                            # cut short by Ctrl-C
    assert read_jsonl(path) == [{"step": 10, "loss": 9.0}, {"step": 20, "loss": 8.0}]
