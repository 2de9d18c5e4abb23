"""The pretraining application (lm.pretraining): its command line, its settings and the news corpus."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lm.errors import ConfigError, LMError
from lm.models.gpt2 import GPT2
from lm.pretraining.__main__ import TrainFlags, build_parser, main
from lm.pretraining.corpus import TOKENIZERS, load_lm_corpus
from lm.pretraining.pretrain import (BOOK_CONTEXTS, GPT2PretrainConfig, NewsLMConfig, build_lm, save_and_check,
                                     train_language_model)
from lm.training.batches import PackedExamples, encode_lines
from lm.training.engine import TrainConfig

from conftest import tiny_gpt2

REQUIRED = ["--model", "rnn", "--data-dir", "d", "--out", "o"]


def tiny_news(root):
    """A data dir with 260 training and 40 validation sentences of 8 words."""
    news = root / "news"
    news.mkdir(parents=True)
    rng = np.random.default_rng(0)
    words = "the president said moscow new york hurricane market shares rose fell in 1987".split()
    lines = [" ".join(rng.choice(words, size=8)).capitalize() for _ in range(300)]
    (news / "train.txt").write_text("\n".join(lines[:260]) + "\n", encoding="utf-8")
    (news / "valid.txt").write_text("\n".join(lines[260:]) + "\n", encoding="utf-8")
    return root


def test_news_lm_end_to_end_on_a_tiny_corpus(tmp_path):
    cfg = TrainConfig(max_steps=5, batch_size=16, context=12, device="cpu")
    m = train_language_model("rnn", tiny_news(tmp_path / "data"), tmp_path / "out", cfg, vocab_size=60, emb_dim=16)
    assert m["steps"] == 5 and math.isfinite(m["val_perplexity"]) and m["val_perplexity"] > 1
    assert sorted(m["samples"]) == sorted(BOOK_CONTEXTS)
    assert m["samples"]["New York"].startswith("New York")
    assert (tmp_path / "out" / "checkpoint.pt").is_file()


def test_the_default_flags_are_the_books_full_run():
    """Oracle: the TrainConfig the command line built by hand before its flags came from TrainFlags."""
    a = build_parser().parse_args(REQUIRED)
    assert TrainFlags().train_config(None) == TrainConfig(
        lr=3e-3, warmup_steps=100, batch_size=32, context=30, max_tokens=2_400_000, eval_interval=500,
        eval_batches=None, checkpoint_interval=500, device=None, seed=0)
    assert (a.threads, a.resume, a.device) == (0, False, None)
    assert NewsLMConfig() == NewsLMConfig(vocab_size=8000, tokenizer="bpe", tokenizer_dir=None, emb_dim=128, layers=2,
                                          heads=8, max_train_lines=None, max_valid_lines=None, keep_digits=False)


def test_the_old_flags_keep_their_meaning():
    """Every flag of `python -m lm.training.pretrain` is still there, with the same destination."""
    a = build_parser().parse_args(REQUIRED + [
        "--tokens", "1000", "--vocab-size", "60", "--tokenizer", "gpt2", "--tokenizer-dir", "tk", "--batch-size", "8",
        "--context", "12", "--lr", "0.01", "--warmup", "3", "--emb-dim", "16", "--layers", "1", "--heads", "2",
        "--eval-interval", "0", "--checkpoint-interval", "7", "--max-train-lines", "50", "--keep-digits", "--resume",
        "--device", "cpu", "--seed", "4", "--threads", "1"])
    assert vars(a) == dict(model="rnn", data_dir="d", out="o", resume=True, device="cpu", threads=1, vocab_size=60,
                           tokenizer="gpt2", tokenizer_dir="tk", emb_dim=16, layers=1, heads=2, max_train_lines=50,
                           max_valid_lines=None, keep_digits=True, tokens=1000, batch_size=8, context=12, lr=0.01,
                           warmup=3, eval_interval=0, checkpoint_interval=7, seed=4)


def test_the_command_line_trains_what_the_function_trains(tmp_path, capsys):
    data = tiny_news(tmp_path / "data")
    flags = ["--tokens", "960", "--batch-size", "16", "--context", "12", "--vocab-size", "60", "--emb-dim", "16",
             "--eval-interval", "0", "--checkpoint-interval", "0", "--device", "cpu"]
    assert main(["--model", "rnn", "--data-dir", str(data), "--out", str(tmp_path / "cli"), *flags]) == 0
    assert "rnn: val_perplexity" in capsys.readouterr().out
    cli = json.loads((tmp_path / "cli" / "summary.json").read_text(encoding="utf-8"))
    cfg = TrainConfig(lr=3e-3, warmup_steps=100, batch_size=16, context=12, max_tokens=960, eval_interval=0,
                      eval_batches=None, checkpoint_interval=0, device="cpu", seed=0)
    direct = train_language_model("rnn", data, tmp_path / "direct", cfg, vocab_size=60, emb_dim=16)
    assert cli["steps"] == direct["steps"] == 5
    assert (cli["val_perplexity"], cli["train_loss"], cli["samples"]) == \
           (direct["val_perplexity"], direct["train_loss"], direct["samples"])


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    data = tiny_news(tmp_path / "data")
    assert main(["--model", "rnn", "--data-dir", str(data), "--out", str(tmp_path / "o"), "--tokenizer", "gpt2"]) == 2
    assert "python -m lm.pretraining: error: tokenizer 'gpt2' needs tokenizer_dir" in capsys.readouterr().err
    for bad in (["--tokenizer", "wordpiece"], ["--model", "lstm"], ["--max-train-lines", "some"]):
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args(REQUIRED + bad)
        assert e.value.code == 2


def test_settings_and_their_fields_as_keywords_are_one_thing(tmp_path):
    with pytest.raises(TypeError, match="num_layers"):
        train_language_model("rnn", tmp_path, tmp_path, TrainConfig(), num_layers=1)
    with pytest.raises(ConfigError, match="'rnn', 'transformer'"):
        build_lm("lstm", 10)
    small = NewsLMConfig(emb_dim=8, layers=1, heads=2)
    assert sum(p.numel() for p in build_lm("transformer", 10, small).parameters()) < \
           sum(p.numel() for p in build_lm("transformer", 10).parameters())


def test_the_corpus_tokenizers_are_named_by_the_tokenizer_classes(tmp_path):
    assert TOKENIZERS == ("bpe", "gpt2")
    with pytest.raises(ConfigError, match="one of 'bpe', 'gpt2', got 'wordpiece'"):
        load_lm_corpus(tiny_news(tmp_path), 12, "wordpiece")


def test_the_small_gpt2s_engine_settings():
    """Oracle: the TrainConfig pretrain_gpt2 built inline before GPT2PretrainConfig.train_config."""
    c = GPT2PretrainConfig(steps=None, max_tokens=9000, eval_batches=None)
    assert c.train_config(3, "cpu") == TrainConfig(lr=2e-3, warmup_steps=20, batch_size=32, context=64, max_steps=None,
                                                   max_tokens=9000, eval_batches=None, eval_interval=0,
                                                   checkpoint_interval=0, device="cpu", seed=3)


def test_save_and_check_saves_a_folder_that_gives_the_same_logits(tmp_path, monkeypatch):
    lines = ["the president said the market rose", "moscow and new york"] * 20
    model, tok = tiny_gpt2(lines, 16)
    ids, _ = encode_lines(lines, tok, tok.eot_id)
    val = PackedExamples(ids, 8)
    save_and_check(model, tok, tmp_path / "m", val)
    assert {"config.json", "model.safetensors", "vocab.json", "merges.txt"} <= {p.name for p in (tmp_path / "m").iterdir()}
    other = GPT2(model.config)                                         # what a broken save/load would give
    monkeypatch.setattr(GPT2, "from_pretrained", classmethod(lambda cls, folder, device=None: other))
    with pytest.raises(LMError, match="logits differ"):
        save_and_check(model, tok, tmp_path / "m2", val)
