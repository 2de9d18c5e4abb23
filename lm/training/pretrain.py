"""Pretraining language models from scratch on a data dir's news corpus (chapters 3, 4 and 5).

    news/train.txt -> tokenizer -> one sentence per example -> the engine (`train`) ->
    validation perplexity + greedy continuations of the book's prompts (the one generation path)

Two entry points, shared by the run_all stages and the command line:

- `train_language_model("rnn" | "transformer", ...)`: the book's chapter 3 Elman RNN or chapter 4
  decoder, with the book's word BPE (or GPT-2's tokenizer) and digits masked as '#';
- `pretrain_gpt2(...)`: a small GPT-2 with its own byte-level BPE, saved as a Hugging Face folder
  (config.json, model.safetensors, vocab.json, merges.txt) that later chapters fine-tune.

    python -m lm.training.pretrain --model rnn         --data-dir ../shared/data --tokens 2400000 --out runs/rnn_news
    python -m lm.training.pretrain --model transformer --data-dir ../shared/data --tokens 2400000 --out runs/decoder_news
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from lm.data.loaders import data_file, iter_lines
from lm.errors import ConfigError, LMError
from lm.inference.complete import complete_ids
from lm.models.gpt2 import GPT2, GPT2Config
from lm.models.rnn import RecurrentLanguageModel, RNNConfig
from lm.models.transformer import DecoderConfig, DecoderLanguageModel
from lm.tokenizers.gpt2 import GPT2Tokenizer
from lm.training.batches import PackedExamples, encode_lines
from lm.training.corpus import load_lm_corpus
from lm.training.engine import TrainConfig, evaluate, iter_batches, train
from lm.utils import atomic_write_json, choose_device, say, seed_everything, write_summary

BOOK_CONTEXTS = ["Moscow", "New York", "The hurricane", "The President"]  # the book's prompts


def build_lm(kind: str, vocab_size: int, emb_dim: int = 128, num_layers: int = 2, num_heads: int = 8,
             attention: str = "fast") -> torch.nn.Module:
    """The book's chapter-3 RNN ('rnn') or chapter-4 decoder ('transformer') language model."""
    if kind == "rnn":
        return RecurrentLanguageModel(RNNConfig(vocab_size, emb_dim, num_layers))
    if kind == "transformer":
        return DecoderLanguageModel(DecoderConfig(vocab_size, emb_dim, num_heads, num_layers, attention))
    raise ConfigError(f"model kind must be 'rnn' or 'transformer', got {kind!r}")


def book_samples(model: torch.nn.Module, tokenizer, eos_id: int | None, max_new_tokens: int = 20) -> dict[str, str]:
    """Greedy continuations of the book's four prompts, stopping at the end-of-sentence token.

    The book continues one prompt at a time; here the four go in one left-padded batch through the
    one completion helper, which gives the same tokens (tests: batched == one by one, every model).
    """
    ids = [tokenizer.encode(p) for p in BOOK_CONTEXTS]
    new = complete_ids(model, ids, max_new_tokens, stop_token_ids=[eos_id] if eos_id is not None else [],
                       pad_token_id=eos_id)                                     # cut before the EOS (the book drops it)
    return {prompt: tokenizer.decode(p + n) for prompt, p, n in zip(BOOK_CONTEXTS, ids, new)}


def train_language_model(kind: str, data_dir, out_dir, cfg: TrainConfig, vocab_size: int = 8000,
                         tokenizer: str = "bpe", tokenizer_dir: str | None = None, emb_dim: int = 128,
                         num_layers: int = 2, num_heads: int = 8, max_train_lines: int | None = None,
                         max_valid_lines: int | None = None, digits_to_hash: bool = True,
                         resume: bool = False) -> dict:
    """Chapters 3-4 end to end: corpus -> tokenizer -> model -> train -> perplexity + samples.

    The book's set-up: one sentence per example, cut to `cfg.context` predicted tokens, digits
    masked as '#'. The same seed and token budget give both model kinds the same batches.
    """
    t0 = time.perf_counter()
    tok, tr, va = load_lm_corpus(data_dir, cfg.context, tokenizer, vocab_size, digits_to_hash,
                                 max_train_lines, max_valid_lines, tokenizer_dir=tokenizer_dir)
    prep_s = time.perf_counter() - t0
    say(f"{kind}: vocab {tok.vocab_size}, {len(tr)} train / {len(va)} valid sentences, "
        f"{tr.n_targets():,} train targets/epoch ({prep_s:.1f} s to tokenize)")
    seed_everything(cfg.seed)
    model = build_lm(kind, tok.vocab_size, emb_dim, num_layers, num_heads)
    n_params = sum(p.numel() for p in model.parameters())
    eos = getattr(tok, "eos_id", getattr(tok, "eot_id", None))

    def samples(m, step):
        return {"samples": book_samples(m, tok, eos)}

    metrics = train(model, tr, va, cfg, out_dir, resume=resume, on_eval=samples, desc=kind)
    metrics.update(model=kind, parameters=n_params, vocab_size=tok.vocab_size, prep_seconds=round(prep_s, 2))
    if "samples" not in metrics:
        metrics.update(samples(model, metrics["steps"]))
    for c, s in metrics["samples"].items():
        say(f"  {c!r} -> {s}")
    return metrics


@dataclass
class GPT2PretrainConfig:
    train_lines: int | None = 20_000   # sentences read from news/train.txt (None: all)
    valid_lines: int | None = 2_000    # sentences read from news/valid.txt (None: all)
    vocab_size: int = 2000             # byte-level BPE vocabulary (256 bytes + merges + <|endoftext|>)
    min_frequency: int = 1             # BPE merges only pairs seen at least this often (vocab_size is a cap)
    n_embd: int = 128                  # model width
    n_layer: int = 2                   # transformer blocks
    n_head: int = 4                    # attention heads
    context: int = 64                  # tokens per training window; n_positions is twice this
    steps: int | None = 250            # optimizer steps (None: from max_tokens)
    max_tokens: int | None = None      # token budget when steps is None
    batch: int = 32                    # windows per step
    eval_batches: int | None = 20      # validation batches per evaluation (None: all)
    warmup_steps: int = 20             # linear warm-up
    eval_interval: int = 0             # steps between evaluations (0: at the end)
    checkpoint_interval: int = 0       # steps between training checkpoints (0: at the end)
    lr: float = 2e-3                   # peak learning rate


def read_news(data_dir, train_lines: int | None, valid_lines: int | None) -> tuple[list[str], list[str]]:
    """The first `train_lines` / `valid_lines` sentences of news/train.txt and news/valid.txt."""
    return (list(iter_lines(data_file(data_dir, "news/train.txt"), max_lines=train_lines)),
            list(iter_lines(data_file(data_dir, "news/valid.txt"), max_lines=valid_lines)))


def pretrain_gpt2(data_dir, folder: Path, cfg: GPT2PretrainConfig, seed: int = 0, device: str | None = None,
                  work_dir: Path | None = None, extra_texts: Sequence[str] = ()) -> dict:
    """Train a byte-level BPE and a small GPT-2 on the news corpus (plus `extra_texts`, each one
    document); save both to `folder`.

    The model is saved with `save_pretrained` (the Hugging Face layout) with the tokenizer files,
    loaded back with `from_pretrained`, and must give bit-identical logits. The training metrics
    go to `folder/pretrain.json`. `work_dir` keeps the engine's metrics.jsonl and checkpoint.
    """
    folder = Path(folder)
    train_lines, valid_lines = read_news(data_dir, cfg.train_lines, cfg.valid_lines)
    train_lines += [t for t in extra_texts if t.strip()]
    t0 = time.perf_counter()
    say(f"gpt2_pretrain: training a {cfg.vocab_size}-token byte-level BPE on {len(train_lines):,} texts "
        f"({len(extra_texts):,} beside the news)")
    tok = GPT2Tokenizer.train(train_lines, cfg.vocab_size, min_frequency=cfg.min_frequency)
    tr_ids, _ = encode_lines(train_lines, tok, tok.eot_id)
    va_ids, _ = encode_lines(valid_lines, tok, tok.eot_id)
    prep_s = time.perf_counter() - t0
    say(f"gpt2_pretrain: {len(tr_ids):,} train / {len(va_ids):,} valid tokens ({prep_s:.1f} s to prepare)")
    val = PackedExamples(va_ids, cfg.context)
    gcfg = GPT2Config(vocab_size=tok.vocab_size, n_positions=2 * cfg.context, n_embd=cfg.n_embd,
                      n_layer=cfg.n_layer, n_head=cfg.n_head, bos_token_id=tok.eot_id,
                      eos_token_id=tok.eot_id, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
    torch.manual_seed(seed)
    model = GPT2(gcfg)
    tcfg = TrainConfig(lr=cfg.lr, warmup_steps=cfg.warmup_steps, batch_size=cfg.batch, context=cfg.context,
                       max_steps=cfg.steps, max_tokens=cfg.max_tokens, eval_batches=cfg.eval_batches,
                       eval_interval=cfg.eval_interval, checkpoint_interval=cfg.checkpoint_interval,
                       device=device, seed=seed)
    m = train(model, PackedExamples(tr_ids, cfg.context), val, tcfg, work_dir, desc="gpt2")

    # Save in the Hugging Face layout, load back, and insist on identical logits.
    model.eval()
    model.save_pretrained(folder)
    tok.save(folder)
    reloaded = GPT2.from_pretrained(folder, device=next(model.parameters()).device)
    probe = val.collate(list(range(min(4, len(val)))))["input_ids"].to(next(model.parameters()).device)
    with torch.no_grad():
        diff = (reloaded(probe) - model(probe)).abs().max().item()
    if diff != 0.0:
        raise LMError(f"{folder}: the reloaded model's logits differ from the trained model's by {diff}")
    metrics = {k: m.get(k) for k in ("steps", "tokens", "train_loss", "tokens_per_s", "seconds")}
    metrics.update(reload_identical=True, prep_seconds=round(prep_s, 2), context=cfg.context,
                   parameters=model.num_parameters(), layers=cfg.n_layer, width=cfg.n_embd, vocab_size=tok.vocab_size,
                   pretraining_texts=len(train_lines), task_texts=len(extra_texts))
    atomic_write_json(folder / "pretrain.json", metrics)
    return metrics


def evaluate_gpt2(model: GPT2, tok: GPT2Tokenizer, valid_lines: list[str], context: int, batch: int,
                  eval_batches: int | None) -> dict:
    """Validation loss and perplexity of a GPT-2 on packed windows of the validation sentences."""
    va_ids, _ = encode_lines(valid_lines, tok, tok.eot_id)
    val = PackedExamples(va_ids, context)
    ev = evaluate(model, iter_batches(val, batch, eval_batches), device=next(model.parameters()).device)
    return {"val_loss": round(ev["loss"], 4), "val_perplexity": round(ev["perplexity"], 2)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train the book's RNN or decoder LM on a data dir's news corpus.")
    p.add_argument("--model", choices=["rnn", "transformer"], required=True, help="chapter 3 RNN or chapter 4 decoder")
    p.add_argument("--data-dir", required=True, help="folder with news/train.txt and news/valid.txt")
    p.add_argument("--out", required=True, help="output folder (metrics.jsonl, checkpoint.pt, summary.json)")
    p.add_argument("--tokens", type=int, default=2_400_000, help="token budget (input positions incl. padding)")
    p.add_argument("--vocab-size", type=int, default=8000, help="BPE vocabulary size (trained on the train split)")
    p.add_argument("--tokenizer", choices=["bpe", "gpt2"], default="bpe", help="the book's BPE or GPT-2's")
    p.add_argument("--tokenizer-dir", help="folder with GPT-2's vocab.json + merges.txt (for --tokenizer gpt2)")
    p.add_argument("--batch-size", type=int, default=32, help="sentences per step")
    p.add_argument("--context", type=int, default=30, help="tokens per sentence (longer ones are cut)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=100, help="warm-up steps")
    p.add_argument("--emb-dim", type=int, default=128, help="embedding width")
    p.add_argument("--layers", type=int, default=2, help="RNN layers / decoder blocks")
    p.add_argument("--heads", type=int, default=8, help="attention heads (transformer)")
    p.add_argument("--eval-interval", type=int, default=500, help="steps between evaluations (0: end only)")
    p.add_argument("--checkpoint-interval", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--max-train-lines", type=int, help="read only this many training sentences")
    p.add_argument("--keep-digits", action="store_true", help="do not mask digits as '#'")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default); 1 is often "
                   "fastest on a busy machine")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m lm.training.pretrain --model rnn|transformer --data-dir DIR --tokens N --out DIR."""
    a = build_parser().parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = TrainConfig(lr=a.lr, warmup_steps=a.warmup, batch_size=a.batch_size, context=a.context,
                      max_tokens=a.tokens, eval_interval=a.eval_interval, eval_batches=None,
                      checkpoint_interval=a.checkpoint_interval, device=a.device, seed=a.seed)
    try:
        choose_device(a.device)
        m = train_language_model(a.model, a.data_dir, a.out, cfg, a.vocab_size, a.tokenizer, a.tokenizer_dir,
                                 a.emb_dim, a.layers, a.heads, a.max_train_lines, digits_to_hash=not a.keep_digits,
                                 resume=a.resume)
    except LMError as e:
        print(f"lm.training.pretrain: error: {e}", file=sys.stderr)
        return 2
    write_summary(a.out, m)
    print(f"{a.model}: val_perplexity {m['val_perplexity']:.2f} after {m['tokens']:,} tokens, {m['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
