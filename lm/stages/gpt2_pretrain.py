"""Stage gpt2_pretrain (chapter 5): a small GPT-2 trained here, so chapter 5 needs no download.

1. `pretrained_gpt2` trains a byte-level BPE (GPT-2's tokenizer algorithm) and a small GPT-2 on
   the data dir's news corpus (`lm.training.pretrain.pretrain_gpt2`), saves them as a Hugging Face
   folder, loads it back and checks the logits are bit-identical;
2. this stage measures the model's validation perplexity and continues the book's prompts
   through the one generation path (KV cache): greedy and nucleus sampling.

With `--gpt2 FOLDER` (a Hugging Face GPT-2 folder) or `--gpt2 gpt2` (downloaded into the cache
when online) nothing is trained: the stage measures those weights on the same validation text.

`pretrained_gpt2(cfg, data_dir)` is the one way a stage gets the small GPT-2: the `--gpt2` folder,
or the model trained once per run and cached in `RUN/pretrained/gpt2`.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from lm.errors import ConfigError
from lm.data.download import gpt2_folder
from lm.inference.generate import generate_text
from lm.inference.sampling import SamplingConfig
from lm.models.gpt2 import GPT2
from lm.stages import RunConfig, quick_full, settings_for
from lm.tokenizers.gpt2 import GPT2Tokenizer
from lm.training.pretrain import BOOK_CONTEXTS, GPT2PretrainConfig, evaluate_gpt2, pretrain_gpt2, read_news
from lm.utils import choose_device, say, seed_everything

KEY_METRICS = ["val_perplexity", "parameters", "reload_identical"]
DATA_FILES = ["news/train.txt", "news/valid.txt"]   # the small GPT-2 is trained on these; with --gpt2, valid.txt measures it
NEEDS_GPT2 = True


@dataclass
class Settings:
    # the model trained here (--quick: about a minute on 2 CPU cores; --full: sized for real news)
    train_lines: int | None = quick_full(20_000, None)    # sentences of news/train.txt (None: all)
    valid_lines: int | None = quick_full(2_000, None)     # sentences of news/valid.txt (None: all)
    vocab_size: int = quick_full(2000, 8000)              # byte-level BPE vocabulary
    n_embd: int = quick_full(128, 256)                    # model width
    n_layer: int = quick_full(2, 4)                       # blocks
    n_head: int = quick_full(4, 8)                        # attention heads
    context: int = quick_full(64, 128)                    # tokens per training window
    steps: int | None = quick_full(250, None)             # optimizer steps (None: from max_tokens)
    max_tokens: int | None = quick_full(None, 5_000_000)  # token budget when steps is None
    batch: int = quick_full(32, 32)                       # windows per step (and per evaluation batch)
    eval_batches: int | None = quick_full(20, None)       # validation batches (None: all)
    warmup_steps: int = quick_full(20, 200)               # linear warm-up steps
    eval_interval: int = quick_full(0, 500)               # steps between evaluations (0: at the end)
    checkpoint_interval: int = quick_full(0, 1000)        # steps between training checkpoints
    # real GPT-2 weights (--gpt2): a 124M+ model on a CPU is measured on a few thousand tokens
    real_context: int = quick_full(128, 512)              # window for measuring real weights
    real_batch: int = quick_full(8, 8)                    # windows per evaluation batch
    real_eval_batches: int | None = quick_full(4, None)   # batches (None: all)


def pretrain_config(s: Settings) -> GPT2PretrainConfig:
    """The pretraining fields of the stage's settings."""
    names = {f.name for f in fields(GPT2PretrainConfig)}
    return GPT2PretrainConfig(**{k: v for k, v in vars(s).items() if k in names})


def pretrained_gpt2(cfg: RunConfig, data_dir: Path) -> Path:
    """The folder of the GPT-2 the chapter 5 stages start from (Hugging Face layout + tokenizer).

    `--gpt2` given: that folder (a hub name is fetched into the download cache first). Otherwise
    the small GPT-2 of this stage, trained on `data_dir`'s news corpus once per run and cached in
    `RUN/pretrained/gpt2` (complete once `pretrain.json` is there; a half-trained folder is redone).
    """
    if cfg.gpt2:
        return gpt2_folder(cfg.gpt2)
    if cfg.run_dir is None:
        raise ConfigError("pretrained_gpt2 needs RunConfig.run_dir (the run's out dir) to cache the model in")
    folder = Path(cfg.run_dir) / "pretrained" / "gpt2"
    if (folder / "pretrain.json").is_file():
        return folder
    partial = folder.with_name("gpt2.partial")
    shutil.rmtree(partial, ignore_errors=True)
    seed_everything(cfg.seed)
    pretrain_gpt2(data_dir, partial, pretrain_config(settings_for(Settings, cfg.quick)), cfg.seed, cfg.device,
                  work_dir=folder.with_name("gpt2_train"))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def samples(model: GPT2, tok, seed: int) -> dict:
    """Greedy and nucleus-sampled continuations of the book's prompts, all prompts in one batch."""
    kw = dict(stop_token_ids=[tok.eot_id] if tok.eot_id is not None else [], pad_token_id=tok.eot_id)
    greedy = generate_text(model, tok, BOOK_CONTEXTS, 20, **kw)
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    sampled = generate_text(model, tok, BOOK_CONTEXTS, 20, sampling=SamplingConfig(temperature=0.8, top_p=0.9),
                            generator=g, **kw)
    return {"greedy": {p: p + t for p, t in zip(BOOK_CONTEXTS, greedy)},
            "top_p_0.9": {p: p + t for p, t in zip(BOOK_CONTEXTS, sampled)}}


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:
    device = choose_device(cfg.device)
    folder = pretrained_gpt2(cfg, data_dir)
    model = GPT2.from_pretrained(folder, device=device)
    tok = GPT2Tokenizer.from_dir(folder)
    if cfg.gpt2:   # real GPT-2 weights: nothing trained, just measure and generate
        metrics: dict = {"source": str(folder)}
        context, batch, eval_batches = min(s.real_context, model.config.n_positions), s.real_batch, s.real_eval_batches
    else:
        metrics = json.loads((folder / "pretrain.json").read_text(encoding="utf-8"))
        metrics["model_dir"] = str(folder)
        curve = folder.with_name("gpt2_train") / "metrics.jsonl"   # the engine's log of the training
        if curve.is_file():
            shutil.copyfile(curve, out_dir / "metrics.jsonl")      # kept with the stage, for the report's curves
        context, batch, eval_batches = s.context, s.batch, s.eval_batches
    _, valid_lines = read_news(data_dir, 1, s.valid_lines)
    metrics.update(evaluate_gpt2(model, tok, valid_lines, context, batch, eval_batches))
    metrics.update(parameters=model.num_parameters(), vocab_size=tok.vocab_size, context=context)
    metrics["samples"] = samples(model, tok, cfg.seed)
    for kind, texts in metrics["samples"].items():
        for text in texts.values():
            say(f"  [{kind}] {text!r}")
    return metrics
