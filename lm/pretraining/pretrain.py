"""Pretraining language models from scratch on a data dir's news corpus (chapters 3, 4 and 5).

    news/train.txt -> tokenizer -> one sentence per example -> the engine (`train`) ->
    validation perplexity + greedy continuations of the book's prompts (the one generation path)

Two entry points, shared by the run_all stages and the command line (`lm/pretraining/__main__.py`):

- `train_language_model("rnn" | "transformer", ...)`: the book's chapter 3 Elman RNN or chapter 4
  decoder, with the book's word BPE (or GPT-2's tokenizer) and digits masked as '#';
- `pretrain_gpt2(...)`: a small GPT-2 with its own byte-level BPE, saved as a Hugging Face folder
  (config.json, model.safetensors, vocab.json, merges.txt) that later chapters fine-tune.

    python -m lm.pretraining --model rnn         --data-dir ../shared/data --tokens 2400000 --out runs/rnn_news
    python -m lm.pretraining --model transformer --data-dir ../shared/data --tokens 2400000 --out runs/decoder_news
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from lm.cli import option
from lm.errors import ConfigError, LMError
from lm.inference.complete import complete_ids
from lm.models.gpt2 import GPT2, GPT2Config
from lm.models.rnn import RecurrentLanguageModel, RNNConfig
from lm.models.transformer import DecoderConfig, DecoderLanguageModel
from lm.pretraining.corpus import TOKENIZERS, load_lm_corpus, read_news
from lm.tokenizers.bpe import BPETokenizer
from lm.tokenizers.gpt2 import GPT2Tokenizer
from lm.training.batches import PackedExamples, encode_lines
from lm.training.engine import TrainConfig, evaluate, iter_batches, train
from lm.utils import atomic_write_json, say, seed_everything

BOOK_CONTEXTS = ["Moscow", "New York", "The hurricane", "The President"]  # the book's prompts
KINDS = ("rnn", "transformer")   # the chapter 3 RNN, the chapter 4 decoder


@dataclass
class NewsLMConfig:
    """A chapter 3-4 model and the news it reads (the engine's settings are a TrainConfig beside it).
    The defaults are the book's; the command line's flags are these fields (lm.cli)."""
    vocab_size: int = option(8000, "BPE vocabulary size (trained on the train split)")
    tokenizer: str = option(BPETokenizer.NAME, "the book's BPE (trained here) or GPT-2's (from --tokenizer-dir)",
                            choices=TOKENIZERS)
    tokenizer_dir: str | None = option(None, "folder with GPT-2's vocab.json + merges.txt "
                                             f"(for --tokenizer {GPT2Tokenizer.NAME})")
    emb_dim: int = option(128, "embedding width")
    layers: int = option(2, "RNN layers / decoder blocks")
    heads: int = option(8, "attention heads (transformer)")
    max_train_lines: int | None = option(None, "read only this many training sentences (none: all)")
    max_valid_lines: int | None = option(None, "read only this many validation sentences (none: all)")
    keep_digits: bool = option(False, "do not mask digits as '#' (the book masks them)")


def build_lm(kind: str, vocab_size: int, setup: NewsLMConfig | None = None, attention: str = "fast") -> torch.nn.Module:
    """The book's chapter-3 RNN ('rnn') or chapter-4 decoder ('transformer') language model, sized
    by `setup` (default: the book's embedding 128, 2 layers, 8 heads)."""
    s = setup or NewsLMConfig()
    if kind == "rnn":
        return RecurrentLanguageModel(RNNConfig(vocab_size, s.emb_dim, s.layers))
    if kind == "transformer":
        return DecoderLanguageModel(DecoderConfig(vocab_size, s.emb_dim, s.heads, s.layers, attention))
    raise ConfigError(f"model kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")


def book_samples(model: torch.nn.Module, tokenizer, eos_id: int | None, max_new_tokens: int = 20) -> dict[str, str]:
    """Greedy continuations of the book's four prompts, stopping at the end-of-sentence token.

    The book continues one prompt at a time; here the four go in one left-padded batch through the
    one completion helper, which gives the same tokens (tests: batched == one by one, every model).
    """
    ids = [tokenizer.encode(p) for p in BOOK_CONTEXTS]
    new = complete_ids(model, ids, max_new_tokens, stop_token_ids=[eos_id] if eos_id is not None else [],
                       pad_token_id=eos_id)                                     # cut before the EOS (the book drops it)
    return {prompt: tokenizer.decode(p + n) for prompt, p, n in zip(BOOK_CONTEXTS, ids, new)}


def train_language_model(kind: str, data_dir, out_dir, cfg: TrainConfig, setup: NewsLMConfig | None = None,
                         resume: bool = False, **fields) -> dict:
    """Chapters 3-4 end to end: corpus -> tokenizer -> model -> train -> perplexity + samples.

    The book's set-up: one sentence per example, cut to `cfg.context` predicted tokens, digits
    masked as '#'. The same seed and token budget give both model kinds the same batches.
    `setup` (default: NewsLMConfig()) with `fields` replaced, e.g. `vocab_size=2000`.
    """
    s = dataclasses.replace(setup or NewsLMConfig(), **fields)
    t0 = time.perf_counter()
    tok, tr, va = load_lm_corpus(data_dir, cfg.context, s.tokenizer, s.vocab_size, not s.keep_digits,
                                 s.max_train_lines, s.max_valid_lines, tokenizer_dir=s.tokenizer_dir)
    prep_s = time.perf_counter() - t0
    say(f"{kind}: vocab {tok.vocab_size}, {len(tr)} train / {len(va)} valid sentences, "
        f"{tr.n_targets():,} train targets/epoch ({prep_s:.1f} s to tokenize)")
    seed_everything(cfg.seed)
    model = build_lm(kind, tok.vocab_size, s)
    n_params = sum(p.numel() for p in model.parameters())
    eos = getattr(tok, "eos_id", getattr(tok, "eot_id", None))

    def samples(m, step):
        return {"samples": book_samples(m, tok, eos)}

    metrics = train(model, tr, va, cfg, out_dir, resume=resume, on_eval=samples, desc=kind)
    metrics.update(model=kind, parameters=n_params, vocab_size=tok.vocab_size, prep_seconds=round(prep_s, 2))
    if "samples" not in metrics:
        metrics.update(samples(model, metrics["steps"]))
    for prompt, text in metrics["samples"].items():
        say(f"  {prompt!r} -> {text}")
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

    def train_config(self, seed: int, device: str | None) -> TrainConfig:
        """The engine's settings for this pretraining."""
        return TrainConfig(lr=self.lr, warmup_steps=self.warmup_steps, batch_size=self.batch, context=self.context,
                           max_steps=self.steps, max_tokens=self.max_tokens, eval_batches=self.eval_batches,
                           eval_interval=self.eval_interval, checkpoint_interval=self.checkpoint_interval,
                           device=device, seed=seed)


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
    m = train(model, PackedExamples(tr_ids, cfg.context), val, cfg.train_config(seed, device), work_dir,
              desc="gpt2_pretrain")
    save_and_check(model, tok, folder, val)
    metrics = {k: m.get(k) for k in ("steps", "tokens", "train_loss", "tokens_per_s", "seconds")}
    metrics.update(reload_identical=True, prep_seconds=round(prep_s, 2), context=cfg.context,
                   parameters=model.num_parameters(), layers=cfg.n_layer, width=cfg.n_embd, vocab_size=tok.vocab_size,
                   pretraining_texts=len(train_lines), task_texts=len(extra_texts))
    atomic_write_json(folder / "pretrain.json", metrics)
    return metrics


def save_and_check(model: GPT2, tok: GPT2Tokenizer, folder: Path, val: PackedExamples) -> None:
    """Save the model and its tokenizer in the Hugging Face layout, load the model back and insist on
    bit-identical logits on the first validation windows (an LMError naming the folder otherwise)."""
    model.eval()
    model.save_pretrained(folder)
    tok.save(folder)
    device = next(model.parameters()).device
    reloaded = GPT2.from_pretrained(folder, device=device)
    probe = val.collate(list(range(min(4, len(val)))))["input_ids"].to(device)      # (4, context)
    with torch.no_grad():
        diff = (reloaded(probe) - model(probe)).abs().max().item()
    if diff != 0.0:
        raise LMError(f"{folder}: the reloaded model's logits differ from the trained model's by {diff}")


def evaluate_gpt2(model: GPT2, tok: GPT2Tokenizer, valid_lines: list[str], context: int, batch: int,
                  eval_batches: int | None) -> dict:
    """Validation loss and perplexity of a GPT-2 on packed windows of the validation sentences."""
    va_ids, _ = encode_lines(valid_lines, tok, tok.eot_id)
    val = PackedExamples(va_ids, context)
    ev = evaluate(model, iter_batches(val, batch, eval_batches), device=next(model.parameters()).device)
    return {"val_loss": round(ev["loss"], 4), "val_perplexity": round(ev["perplexity"], 2)}
