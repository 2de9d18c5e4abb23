"""Chapters 3-4 on the news corpus: the book's RNN and decoder LMs trained with the engine.

Shared by the run_all stages `rnn_lm` and `decoder_lm` and by the command line:

    python -m lm.news_lm --model rnn         --data-dir ../shared/data --tokens 2400000 --out runs/rnn_news
    python -m lm.news_lm --model transformer --data-dir ../shared/data --tokens 2400000 --out runs/decoder_news

news corpus -> tokenizer (the book's BPE trained on the training split, or GPT-2's) -> one
sentence per example -> `lm.train.train` -> validation perplexity + greedy samples from the
book's prompts.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from lm.train import TrainConfig, train
from lm.utils import ConfigError, atomic_write_json, say

BOOK_CONTEXTS = ["Moscow", "New York", "The hurricane", "The President"]  # the book's prompts


@torch.no_grad()
def generate_text(model: torch.nn.Module, tokenizer, prompt: str, max_new_tokens: int = 20,
                  context: int = 30, eos_id: int | None = None, temperature: float = 0.0,
                  generator: torch.Generator | None = None) -> str:
    """Continue `prompt` token by token (greedy when temperature == 0, as the book does).

    The model sees at most the last `context` tokens (what it was trained on). No KV cache: each
    step reruns the window, which is cheap at these sizes (lm.generate has the cached version).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    ids = list(tokenizer.encode(prompt))
    for _ in range(max_new_tokens):
        x = torch.tensor([ids[-context:]], dtype=torch.long, device=device)   # (1, T)
        logits = model(x)[0, -1].float()                                       # (V,)
        if temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1)
            nxt = int(torch.multinomial(probs.cpu(), 1, generator=generator))
        else:
            nxt = int(torch.argmax(logits))
        if eos_id is not None and nxt == eos_id:
            break
        ids.append(nxt)
    model.train(was_training)
    return tokenizer.decode(ids)


def build_lm(kind: str, vocab_size: int, emb_dim: int = 128, num_layers: int = 2, num_heads: int = 8,
             attention: str = "fast") -> torch.nn.Module:
    """The book's chapter-3 RNN ('rnn') or chapter-4 decoder ('transformer') language model."""
    if kind == "rnn":
        from lm.rnn import RecurrentLanguageModel
        return RecurrentLanguageModel(vocab_size, emb_dim, num_layers)
    if kind == "transformer":
        from lm.transformer import DecoderLanguageModel
        return DecoderLanguageModel(vocab_size, emb_dim, num_heads, num_layers, attention)
    raise ConfigError(f"model kind must be 'rnn' or 'transformer', got {kind!r}")


def train_news_lm(kind: str, data_dir, out_dir, cfg: TrainConfig, vocab_size: int = 8000,
                  tokenizer: str = "bpe", tokenizer_dir: str | None = None, emb_dim: int = 128,
                  num_layers: int = 2, num_heads: int = 8, max_train_lines: int | None = None,
                  max_valid_lines: int | None = None, digits_to_hash: bool = True, resume: bool = False) -> dict:
    """Chapters 3-4 end to end: news corpus -> tokenizer -> model -> train -> perplexity + samples.

    The book's set-up: one sentence per example, cut to `cfg.context` predicted tokens, digits
    masked as '#'. The same seed and token budget give both model kinds the same batches.
    """
    from lm.lm_data import load_lm_corpus
    from lm.utils import seed_everything
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
        return {"samples": {c: generate_text(m, tok, c, context=cfg.context, eos_id=eos) for c in BOOK_CONTEXTS}}

    metrics = train(model, tr, va, cfg, out_dir, resume=resume, on_eval=samples, desc=kind)
    metrics.update(model=kind, parameters=n_params, vocab_size=tok.vocab_size, prep_seconds=round(prep_s, 2))
    if "samples" not in metrics:
        metrics.update(samples(model, metrics["steps"]))
    for c, s in metrics["samples"].items():
        say(f"  {c!r} -> {s}")
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / "summary.json", metrics)
    return metrics


def news_lm_stage(kind: str, run_cfg, data_dir, out_dir) -> dict:
    """The run_all.py stages rnn_lm / decoder_lm: identical settings for both model kinds.

    --quick: the first 20,000 sentences, a 2,000-token BPE, 500 steps of 32 sentences (under
    0.5 M tokens); well under 90 s on 2 CPU cores. --full: the book's shapes on the whole corpus,
    an 8,000-token BPE and a 2.4 M-token budget (2,500 steps of 32 sentences, about one epoch of the
    real news data) = `python -m lm.news_lm --model rnn|transformer --data-dir DIR`.
    Small batches on purpose: the RNN, initialised as the book does (Xavier also on the embedding),
    sits on a unigram plateau for its first few hundred steps; more steps get it past that sooner.
    """
    quick = run_cfg.quick
    cfg = TrainConfig(lr=3e-3, warmup_steps=50 if quick else 100, batch_size=32, context=30,
                      max_steps=500 if quick else None, max_tokens=None if quick else 2_400_000,
                      eval_interval=0 if quick else 500, eval_batches=16 if quick else None,
                      checkpoint_interval=0 if quick else 500, device=run_cfg.device, seed=run_cfg.seed)
    return train_news_lm(kind, data_dir, out_dir, cfg, vocab_size=2000 if quick else 8000,
                         max_train_lines=20_000 if quick else None, max_valid_lines=2_000 if quick else None)


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m lm.news_lm --model rnn|transformer --data-dir DIR --tokens N --out DIR."""
    import argparse
    import sys
    from lm.utils import LMError
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
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = TrainConfig(lr=a.lr, warmup_steps=a.warmup, batch_size=a.batch_size, context=a.context,
                      max_tokens=a.tokens, eval_interval=a.eval_interval, eval_batches=None,
                      checkpoint_interval=a.checkpoint_interval, device=a.device, seed=a.seed)
    try:
        m = train_news_lm(a.model, a.data_dir, a.out, cfg, a.vocab_size, a.tokenizer, a.tokenizer_dir, a.emb_dim,
                          a.layers, a.heads, a.max_train_lines, digits_to_hash=not a.keep_digits, resume=a.resume)
    except LMError as e:
        print(f"lm.news_lm: error: {e}", file=sys.stderr)
        return 2
    print(f"{a.model}: val_perplexity {m['val_perplexity']:.2f} after {m['tokens']:,} tokens, {m['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
