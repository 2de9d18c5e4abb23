"""Stage gpt2_pretrain (chapter 5): a small GPT-2 trained here, so chapter 5 needs no download.

1. train a byte-level BPE (GPT-2's tokenizer algorithm) on the data dir's news corpus;
2. pretrain `lm.gpt2.GPT2` with the engine (`lm.train`) on the packed token stream, each
   sentence ended by `<|endoftext|>`;
3. `save_pretrained` it (config.json + model.safetensors, the Hugging Face layout) with the
   tokenizer files (vocab.json + merges.txt) into OUT/gpt2_pretrain/model, load it back with
   `from_pretrained`, and check the reloaded model gives bit-identical logits;
4. continue the book's prompts with `lm.generate` (KV cache): greedy and nucleus sampling.

With `--gpt2 FOLDER` (a Hugging Face GPT-2 folder) or `--gpt2 gpt2` (downloaded into the cache
when online) the stage loads those weights and tokenizer instead of training, and measures
their perplexity on the same validation sentences.

--quick: 20,000 sentences, a 2,000-token vocabulary, a 2-layer 128-wide GPT-2, 250 steps of
32 x 64 tokens (about 1 minute on 2 CPU cores). --full: the whole corpus, an 8,000-token
vocabulary, 4 layers x 256 wide, a 5 M-token budget.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from lm.data import data_file
from lm.data.download import gpt2_folder
from lm.generate import generate_text
from lm.gpt2 import GPT2, GPT2Config
from lm.gpt2_tokenizer import GPT2Tokenizer
from lm.lm_data import PackedExamples, encode_lines, iter_lines
from lm.news_lm import BOOK_CONTEXTS
from lm.sampling import SamplingConfig
from lm.train import TrainConfig, evaluate, iter_batches, train
from lm.utils import LMError, atomic_write_json, choose_device, say

KEY_METRICS = ["val_perplexity", "parameters", "reload_identical"]


def _settings(quick: bool) -> dict:
    if quick:
        return dict(train_lines=20_000, valid_lines=2_000, vocab_size=2000, n_embd=128, n_layer=2, n_head=4,
                    context=64, steps=250, max_tokens=None, batch=32, eval_batches=20)
    return dict(train_lines=None, valid_lines=None, vocab_size=8000, n_embd=256, n_layer=4, n_head=8,
                context=128, steps=None, max_tokens=5_000_000, batch=32, eval_batches=None)


def samples(model: GPT2, tok, seed: int) -> dict:
    """Greedy and nucleus-sampled continuations of the book's prompts, all prompts in one batch."""
    kw = dict(stop_token_ids=[tok.eot_id] if tok.eot_id is not None else [], pad_token_id=tok.eot_id)
    greedy = generate_text(model, tok, BOOK_CONTEXTS, 20, **kw)
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    sampled = generate_text(model, tok, BOOK_CONTEXTS, 20, sampling=SamplingConfig(temperature=0.8, top_p=0.9),
                            generator=g, **kw)
    return {"greedy": {p: p + t for p, t in zip(BOOK_CONTEXTS, greedy)},
            "top_p_0.9": {p: p + t for p, t in zip(BOOK_CONTEXTS, sampled)}}


def run(cfg, data_dir: Path, out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    s = _settings(cfg.quick)
    device = choose_device(cfg.device)
    t0 = time.perf_counter()
    train_lines = list(iter_lines(data_file(data_dir, "news/train.txt"), max_lines=s["train_lines"]))
    valid_lines = list(iter_lines(data_file(data_dir, "news/valid.txt"), max_lines=s["valid_lines"]))
    metrics: dict = {}

    if cfg.gpt2:   # real GPT-2 weights: no training, just measure and generate
        folder = gpt2_folder(cfg.gpt2)   # a folder as is, or a hub name fetched
        tok = GPT2Tokenizer.from_dir(folder)
        model = GPT2.from_pretrained(folder, device=device)
        # a 124M+ model on a CPU: measure on a few thousand tokens in --quick
        context = min(128 if cfg.quick else 512, model.config.n_positions)
        s.update(batch=8, eval_batches=4 if cfg.quick else None)
        metrics.update(source=str(folder))
    else:
        say(f"gpt2_pretrain: training a {s['vocab_size']}-token byte-level BPE on {len(train_lines):,} sentences")
        tok = GPT2Tokenizer.train(train_lines, s["vocab_size"])
        context = s["context"]
    tr_ids, _ = encode_lines(train_lines, tok, tok.eot_id)
    va_ids, _ = encode_lines(valid_lines, tok, tok.eot_id)
    prep_s = time.perf_counter() - t0
    say(f"gpt2_pretrain: {len(tr_ids):,} train / {len(va_ids):,} valid tokens ({prep_s:.1f} s to prepare)")
    val = PackedExamples(va_ids, context)

    if not cfg.gpt2:
        gcfg = GPT2Config(vocab_size=tok.vocab_size, n_positions=2 * context, n_embd=s["n_embd"],
                          n_layer=s["n_layer"], n_head=s["n_head"], bos_token_id=tok.eot_id,
                          eos_token_id=tok.eot_id, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
        torch.manual_seed(cfg.seed)
        model = GPT2(gcfg)
        tcfg = TrainConfig(lr=2e-3, warmup_steps=20 if cfg.quick else 200, batch_size=s["batch"], context=context,
                           max_steps=s["steps"], max_tokens=s["max_tokens"], eval_batches=s["eval_batches"],
                           eval_interval=0 if cfg.quick else 500, checkpoint_interval=0 if cfg.quick else 1000,
                           device=cfg.device, seed=cfg.seed)
        train_metrics = train(model, PackedExamples(tr_ids, context), val, tcfg, out_dir / "train", desc="gpt2")
        metrics.update({k: train_metrics.get(k) for k in ("steps", "tokens", "train_loss", "tokens_per_s")})

        # Save in the Hugging Face layout, load back, and insist on identical logits.
        folder = out_dir / "model"
        model.eval()
        model.save_pretrained(folder)
        tok.save(folder)
        reloaded = GPT2.from_pretrained(folder, device=device)
        tok = GPT2Tokenizer.from_dir(folder)
        probe = val.collate(list(range(min(4, len(val)))))["input_ids"].to(device)
        with torch.no_grad():
            diff = (reloaded(probe) - model(probe)).abs().max().item()
        if diff != 0.0:
            raise LMError(f"{folder}: the reloaded model's logits differ from the trained model's by {diff}")
        metrics.update(reload_identical=True, model_dir=str(folder))
        model = reloaded

    ev = evaluate(model, iter_batches(val, s["batch"], s["eval_batches"]), device=device)
    metrics.update(val_loss=round(ev["loss"], 4), val_perplexity=round(ev["perplexity"], 2),
                   parameters=model.num_parameters(), vocab_size=tok.vocab_size, context=context,
                   prep_seconds=round(prep_s, 2))
    metrics["samples"] = samples(model, tok, cfg.seed)
    for kind, texts in metrics["samples"].items():
        for text in texts.values():
            say(f"  [{kind}] {text!r}")
    atomic_write_json(out_dir / "summary.json", metrics)
    return metrics
