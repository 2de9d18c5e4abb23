"""Stage gpt2_pretrain (chapter 5): a small GPT-2 trained here, so chapter 5 needs no download.

1. `small_gpt2` trains a byte-level BPE (GPT-2's tokenizer algorithm) and a small GPT-2 on
   the data dir's news corpus (`lm.pretraining.pretrain.pretrain_gpt2`), saves them as a Hugging Face
   folder, loads it back and checks the logits are bit-identical;
2. this stage measures the model's validation perplexity and continues the book's prompts
   through the one generation path (KV cache): greedy and nucleus sampling.

With `--model FOLDER` (alias `--gpt2`: a Hugging Face GPT-2 folder) or `--model gpt2` (downloaded
into the cache when online) nothing is trained: the stage measures those weights on the same
validation text.

`choose_base(cfg, data_dir, base)` is the one place the chapter 5 stages get their base model,
ours or real weights (`lm.finetune.base_model.BaseModel`): the `--model` folder, or the small GPT-2
trained once per run and cached in `RUN/pretrained/<base>`: "news" (this stage's, 2,000 tokens) or
"emotion" (the emotion stages', 16,000 tokens; see `small_gpt2`). `pretrained_gpt2` is its folder,
for the stages that build GPT-2.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from lm.errors import ConfigError
from lm.data.download import model_folder
from lm.data.loaders import book_shuffle, book_split, data_file, load_emotion, load_instruct, optional_file
from lm.finetune.base_model import BaseModel, base_model
from lm.inference.generate import generate_text
from lm.inference.sampling import SamplingConfig
from lm.models.gpt2 import GPT2
from lm.rl.tasks import split_problems
from lm.stages import RunConfig, for_base, quick_full, settings_for
from lm.tokenizers.gpt2 import GPT2Tokenizer
from lm.pretraining.corpus import read_news
from lm.pretraining.pretrain import BOOK_CONTEXTS, GPT2PretrainConfig, evaluate_gpt2, pretrain_gpt2
from lm.utils import choose_device, say, seed_everything

KEY_METRICS = ["val_perplexity", "parameters", "reload_identical"]
DATA_FILES = ["news/train.txt", "news/valid.txt"]   # the small GPT-2 is trained on these; with --model, valid.txt measures it
NEEDS_GPT2 = True


@dataclass
class Settings:
    # the model trained here (--quick: about a minute on 2 CPU cores; --full: sized for real news)
    train_lines: int | None = quick_full(20_000, None)    # sentences of news/train.txt (None: all)
    valid_lines: int | None = quick_full(2_000, None)     # sentences of news/valid.txt (None: all)
    vocab_size: int = quick_full(2000, 8000)              # byte-level BPE vocabulary
    min_frequency: int = quick_full(2, 2)                 # a merge needs a pair seen twice (caps the embedded
    #   data's emotion vocabulary at about 3,100 instead of 4,708 one-off words; binds nowhere else)
    n_embd: int = quick_full(128, 256)                    # model width
    n_layer: int = quick_full(2, 4)                       # blocks
    n_head: int = quick_full(4, 8)                        # attention heads
    context: int = quick_full(128, 128)                   # tokens per training window (n_positions: twice this)
    steps: int | None = quick_full(250, None)             # optimizer steps (None: from max_tokens)
    max_tokens: int | None = quick_full(None, 5_000_000)  # token budget when steps is None
    batch: int = quick_full(16, 32)                       # windows per step (and per evaluation batch)
    eval_batches: int | None = quick_full(20, None)       # validation batches (None: all)
    warmup_steps: int = quick_full(20, 200)               # linear warm-up steps
    eval_interval: int = quick_full(0, 500)               # steps between evaluations (0: at the end)
    checkpoint_interval: int = quick_full(0, 1000)        # steps between training checkpoints
    task_texts: bool = quick_full(True, True)             # also pretrain on the chapter 5 tasks' training splits
    # the emotion stages' base (emotion_sft, emotion_lora, emotion_classifier): the same texts and
    # recipe with a vocabulary large enough to keep most words whole (see `small_gpt2`)
    emotion_vocab_size: int = quick_full(16000, 16000)    # byte-level BPE vocabulary of that base
    emotion_steps: int | None = quick_full(100, None)     # its optimizer steps (its 16,000-way output layer
    #   makes a step 2.5x dearer; 100 steps measured as good as 250 for the emotion stages on real data)
    # real GPT-2 weights (--model / --gpt2): a 124M+ model on a CPU is measured on a few thousand tokens
    real_context: int = quick_full(128, 512)              # window for measuring real weights
    real_batch: int = quick_full(8, 8)                    # windows per evaluation batch
    real_eval_batches: int | None = quick_full(4, None)   # batches (None: all)


BASES = ("news", "emotion")   # the two small GPT-2s a run can pretrain (folders RUN/pretrained/<name>)


def pretrain_config(s: Settings, base: str = "news") -> GPT2PretrainConfig:
    """The pretraining fields of the stage's settings, for `base` (one of BASES)."""
    names = {f.name for f in fields(GPT2PretrainConfig)}
    cfg = GPT2PretrainConfig(**{k: v for k, v in vars(s).items() if k in names})
    return replace(cfg, vocab_size=s.emotion_vocab_size, steps=s.emotion_steps) if base == "emotion" else cfg


def task_texts(data_dir: Path) -> list[str]:
    """The training splits of the chapter 5 tasks, as extra pretraining text: the emotion texts of
    train.jsonl, the instruct rows the instruct_sft stage trains on, and the GSM8K problems (question
    and worked solution) the GRPO stages train on. Never an evaluation split, never a label: this
    is the unlabelled in-domain text a base model would have seen. Files absent from the data dir
    are skipped."""
    texts: list[str] = []
    if optional_file(data_dir, "emotion/train.jsonl"):
        texts += [ex.text for ex in load_emotion(data_file(data_dir, "emotion/train.jsonl"))]
    if optional_file(data_dir, "instruct/instruct.jsonl"):
        train_rows, _ = book_split(book_shuffle(load_instruct(data_file(data_dir, "instruct/instruct.jsonl"))))
        texts += [f"{r.instruction}\n{r.solution}" for r in train_rows]
    if optional_file(data_dir, "gsm8k/train.jsonl"):
        train_problems, _ = split_problems(data_dir)
        texts += [f"{p.question}\n{p.solution}\n#### {p.answer}" for p in train_problems]
    return texts


def choose_base(cfg: RunConfig, data_dir: Path, base: str = "news", gpt2_only: bool = False) -> BaseModel:
    """The base model a chapter 5 stage starts from, ours or real weights, decided here once.

    `--model` given (`cfg.model`; alias `--gpt2`): that folder (a hub name is fetched into the
    download cache first), real weights. Otherwise our small GPT-2 `base` (one of BASES,
    `small_gpt2`). `gpt2_only`: the stage builds GPT-2, so a folder of another family is a
    ConfigError (run_all.py's pre-flight refuses it before any stage starts)."""
    if not cfg.model:
        return base_model(small_gpt2(cfg, data_dir, base))
    chosen = base_model(model_folder(cfg.model), cfg.model)
    return chosen.require(GPT2, "this stage builds GPT-2") if gpt2_only else chosen


def pretrained_gpt2(cfg: RunConfig, data_dir: Path, base: str = "news") -> Path:
    """The folder of the GPT-2 a chapter 5 stage starts from (Hugging Face layout + tokenizer): the
    `--model` folder, a GPT-2's only, or our small GPT-2 `base` (`choose_base`)."""
    return choose_base(cfg, data_dir, base, gpt2_only=True).folder


def small_gpt2(cfg: RunConfig, data_dir: Path, base: str = "news") -> Path:
    """Our small GPT-2 `base`: trained on `data_dir`'s news corpus and the tasks' training texts
    (`task_texts`) once per run and cached in `RUN/pretrained/<base>` (complete once
    `pretrain.json` is there; a half-trained folder is redone). Two bases share texts, layers and
    width, and differ in vocabulary and steps:

    - "news" (2,000 tokens): this stage, sampling, instruct_sft, doc_labeling, grpo;
    - "emotion" (16,000 tokens): the three emotion stages. A tweet's emotion is in its words
      ("i feel rejected"), and a word the tokenizer keeps whole has an embedding of its own to
      learn it in: on the real emotion data the classification head reaches 0.68 on the
      2,000-token base and 0.90 on this one. (The book's GPT-2 has 50,257 tokens for everything;
      our GRPO and labelling lessons were measured on the small vocabulary, so it stays theirs.)
    """
    if base not in BASES:
        raise ConfigError(f"unknown base {base!r} (known: {', '.join(BASES)})")
    if cfg.run_dir is None:
        raise ConfigError("small_gpt2 needs RunConfig.run_dir (the run's out dir) to cache the model in")
    folder = Path(cfg.run_dir) / "pretrained" / base
    if (folder / "pretrain.json").is_file():
        return folder
    partial = folder.with_name(f"{base}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    seed_everything(cfg.seed)
    s = settings_for(Settings, cfg.quick)
    pretrain_gpt2(data_dir, partial, pretrain_config(s, base), cfg.seed, cfg.device,
                  work_dir=train_dir(folder), extra_texts=task_texts(data_dir) if s.task_texts else ())
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def train_dir(folder: Path) -> Path:
    """Where a small GPT-2's training run (checkpoint, the engine's metrics.jsonl) is kept."""
    return folder.with_name(f"{folder.name}_train")


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
    base = choose_base(cfg, data_dir, gpt2_only=True)
    s = for_base(s, base.real)        # real weights: measured on fewer, longer windows (real_*)
    model = GPT2.from_pretrained(base.folder, device=choose_device(cfg.device))
    tok = GPT2Tokenizer.from_dir(base.folder)
    if base.real:   # nothing trained, just measure and generate
        metrics: dict = {"source": str(base.folder)}
    else:
        metrics = json.loads((base.folder / "pretrain.json").read_text(encoding="utf-8"))
        metrics["model_dir"] = str(base.folder)
        curve = train_dir(base.folder) / "metrics.jsonl"          # the engine's log of the training
        if curve.is_file():
            shutil.copyfile(curve, out_dir / "metrics.jsonl")      # kept with the stage, for the report's curves
    context = min(s.context, model.config.n_positions)
    _, valid_lines = read_news(data_dir, 1, s.valid_lines)
    metrics.update(evaluate_gpt2(model, tok, valid_lines, context, s.batch, s.eval_batches))
    metrics.update(parameters=model.num_parameters(), vocab_size=tok.vocab_size, context=context)
    metrics["samples"] = samples(model, tok, cfg.seed)
    for kind, texts in metrics["samples"].items():
        for text in texts.values():
            say(f"  [{kind}] {text!r}")
    return metrics
