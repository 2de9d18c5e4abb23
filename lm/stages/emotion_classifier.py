"""Stage emotion_classifier (5.6): GPT-2 with a `score` head read at each text's last real token.

The GPT-2 language model's transformer gets a new linear head (n_embd -> 6 labels, no bias),
read at the last real token of each right-padded text (found from the attention mask), trained
with cross-entropy on train.jsonl (`lm.finetune.classifier`). The fine-tuned classifier is saved
in out_dir/model as a Hugging Face folder whose config.json holds id2label / label2id. The book
pads with id 0 while its pad id is 50256, so its padded rows are scored at a pad position: we
read the real last token instead. Base and settings as in emotion_sft (the book: 8 epochs).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lm.data.loaders import EMOTION_LABELS
from lm.finetune.classifier import classifier_from_lm
from lm.finetune.emotion import describe_base, finetune_emotion_classifier, load_emotion_data, train_config
from lm.stages import RunConfig, quick_full
from lm.stages.gpt2_pretrain import pretrained_gpt2
from lm.tokenizers.gpt2 import GPT2Tokenizer
from lm.utils import choose_device

KEY_METRICS = ["accuracy", "accuracy_valid", "eval_split"]
DATA_FILES = ["emotion/train.jsonl", "emotion/valid.jsonl"]
NEEDS_GPT2 = True


@dataclass
class Settings:
    # our small GPT-2 (the offline default)
    epochs: int = quick_full(3, 8)                  # passes over train.jsonl
    batch_size: int = quick_full(16, 16)            # texts per step
    lr: float = quick_full(1e-3, 5e-4)              # peak learning rate (cosine decay after warm-up)
    warmup_steps: int = quick_full(20, 100)         # linear warm-up steps
    # real GPT-2 weights (--gpt2): the book's settings
    real_epochs: int = quick_full(1, 8)             # the book: 8
    real_lr: float = quick_full(5e-5, 5e-5)         # the book: 5e-5, constant
    real_batch_size: int = quick_full(16, 16)       # the book: 16
    real_max_train: int | None = quick_full(1000, None)  # first examples of train.jsonl (None: all)
    eval_batch: int = quick_full(64, 64)            # texts scored together
    val_batches: int = quick_full(4, 20)            # batches of valid.jsonl for the logged val_loss
    save_model: bool = quick_full(True, True)       # write the classifier to out_dir/model


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:
    folder = pretrained_gpt2(cfg, data_dir)
    device = choose_device(cfg.device)
    real = bool(cfg.gpt2)
    tok = GPT2Tokenizer.from_dir(folder)
    model = classifier_from_lm(folder, EMOTION_LABELS, pad_token_id=tok.eot_id, device=device)
    data = load_emotion_data(data_dir, s.real_max_train if real else None)
    tcfg = train_config(real, s.real_lr if real else s.lr, s.real_batch_size if real else s.batch_size,
                        s.warmup_steps, s.val_batches, cfg.device, cfg.seed)
    metrics = finetune_emotion_classifier(model, tok, data, tcfg, s.real_epochs if real else s.epochs, out_dir,
                                          s.eval_batch, desc="emotion_classifier")
    if s.save_model:
        model.save_pretrained(out_dir / "model")
        tok.save(out_dir / "model")
        metrics["model_dir"] = str(out_dir / "model")
    metrics["base_model"] = describe_base(folder, cfg.gpt2)
    return metrics
