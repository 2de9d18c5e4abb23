"""Stage instruct_sft (5.3.3): instruction tuning of GPT-2 (or Qwen2) with the book's ChatML-style format.

The instruct data is shuffled and split the book's way (seed 42, 90 % train / 10 % test). Each
example's prompt is the ChatML-like text (system, user turn, then "<|im_start|>assistant"), its
completion "{solution}\\n<|im_end|>" + EOS (loss on the completion only, `lm.finetune.sft`).
The book prints the mean training loss per epoch and never scores its test split; we report
`loss_per_epoch` and also `exact_match` on the held-out split: greedy answers through the one
generation path, stopped at "<|im_end|>", compared after the book's normalisation. The embedded
data's answers are checkable (arithmetic, counting, sorting, facts of the toy world); the real
data's (Alpaca) are free text, where exact match is close to 0 by nature.

The tuned model is saved in `OUT/instruct_sft/model` (Hugging Face layout: config.json,
model.safetensors, the tokenizer, and tokenizer_config.json's `chat_template` set to the format it
was trained on, `lm.tokenizers.chat.BOOK_CHAT_TEMPLATE`), ready for `python -m lm.chat` and
`python -m lm.serve`.

With `--model` a Qwen2 folder's tokenizer has `<|im_start|>` / `<|im_end|>` as special tokens: the
same template is then read with the markers as their single ids (`chatml_tokenizer`), and
`<|im_end|>` itself ends the answer (training target and stop id; no EOS after it).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lm.data.loaders import book_shuffle, book_split, data_file, load_instruct
from lm.finetune.base_model import BaseModel, load_lm, save_tokenizer
from lm.finetune.epochs import train_by_epoch
from lm.finetune.sft import (IM_END, SFTExamples, chatml_stop_id, chatml_tokenizer, exact_match,
                             generate_completions, instruct_pair, normalize)
from lm.models.auto import context_length
from lm.stages import FinetuneSettings, RunConfig, for_base, quick_full
from lm.stages.gpt2_pretrain import choose_base
from lm.tokenizers.chat import BOOK_CHAT_TEMPLATE, write_chat_template
from lm.utils import choose_device

KEY_METRICS = ["exact_match", "loss_per_epoch"]
DATA_FILES = ["instruct/instruct.jsonl"]
NEEDS_GPT2 = True
USES_MODEL = True


@dataclass
class Settings(FinetuneSettings):
    epochs: int = quick_full(2, 8)                  # passes over the train split (our small GPT-2)
    real_epochs: int = quick_full(1, 4)             # with --model / --gpt2 (the book: 4)
    real_max_train: int | None = quick_full(None, None)  # first training examples (None: all)
    max_new_tokens: int = quick_full(32, 100)       # longest answer (the book: 100)
    eval_batch: int = quick_full(50, 50)            # prompts generated together
    samples: int = quick_full(5, 5)                 # test answers shown in the metrics


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:
    base = choose_base(cfg, data_dir)
    s = for_base(s, base.real)
    model, base_tok, eos = load_lm(base, choose_device(cfg.device))
    stop, tok = chatml_stop_id(base_tok, eos), chatml_tokenizer(base_tok)     # GPT-2: eos and tok unchanged
    train_rows, test_rows = book_split(book_shuffle(load_instruct(data_file(data_dir, "instruct/instruct.jsonl"))))
    context = context_length(model.config)
    train_ex = SFTExamples([instruct_pair(r.instruction, r.solution) for r in train_rows[:s.max_train]], tok,
                           stop, context=context)
    test_ex = SFTExamples([instruct_pair(r.instruction, r.solution) for r in test_rows], tok, stop,
                          context=context)
    res = train_by_epoch(model, train_ex, test_ex, s.train_config(base.real, cfg), s.epochs, out_dir,
                         desc="instruct_sft")
    prompts = [instruct_pair(r.instruction, r.solution).prompt for r in test_rows]
    answers = generate_completions(model, tok, prompts, s.max_new_tokens, eos_id=stop,
                                   stop_strings=[IM_END], batch_size=s.eval_batch)
    golds = [r.solution for r in test_rows]
    folder = save_chat_model(base, model, context, out_dir / "model")
    return {"exact_match": round(exact_match(answers, golds), 4), "loss_per_epoch": res["loss_per_epoch"],
            "train_examples": len(train_ex), "test_examples": len(test_rows), "truncated_examples": train_ex.truncated,
            "samples": [{"instruction": r.instruction, "answer": a.strip(), "reference": r.solution,
                         "match": normalize(a) == normalize(r.solution)}
                        for r, a in list(zip(test_rows, answers))[:s.samples]],
            **{k: res.get(k) for k in ("steps", "tokens", "val_loss", "seconds_train", "tokens_per_s")},
            "base_model": base.source, "model_dir": str(folder)}


def save_chat_model(base: BaseModel, model, context: int | None, folder: Path) -> Path:
    """The tuned model where `python -m lm.chat FOLDER` takes it: weights, the base's tokenizer, and
    the chat template it was trained on (the book's format, whatever the base's own template was).
    Our small GPT-2 has no tokenizer_config.json: it gets one naming its class and context."""
    model.save_pretrained(folder)
    save_tokenizer(base, folder)
    extra = {} if base.real else {"tokenizer_class": "GPT2Tokenizer", "model_max_length": context}
    write_chat_template(folder, BOOK_CHAT_TEMPLATE, **extra)
    return folder
