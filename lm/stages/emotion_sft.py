"""Stage emotion_sft (5.3.2): GPT-2 fine-tuned to *write* the emotion of a text.

Each training example is the book's prompt, "Predict the emotion for the following text:
{text}\\nEmotion:", with the label + EOS as the completion (loss on the completion only,
`lm.finetune.sft`). After every epoch the model answers every prompt of the eval split greedily
through the one generation path, and an answer counts when it equals the label after the book's
normalisation. The base is our small GPT-2 (`gpt2_pretrain`) unless `--gpt2 FOLDER` gives real
weights, trained then with the book's settings (AdamW 5e-5, batch 16, constant rate, no clipping;
2 epochs in --full). We differ from the book in one detail: at most `max_new_tokens` = 10 new
tokens (the book allows 50), since no label is longer.

`FinetuneSettings` and `setup` are shared by the other GPT-2 fine-tuning stages.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lm.finetune.emotion import describe_base, finetune_emotion_sft, load_emotion_data, train_config
from lm.models.gpt2 import GPT2
from lm.stages import RunConfig, quick_full
from lm.stages.gpt2_pretrain import pretrained_gpt2
from lm.tokenizers.gpt2 import GPT2Tokenizer
from lm.training.engine import TrainConfig
from lm.utils import choose_device

KEY_METRICS = ["accuracy", "accuracy_valid", "eval_split"]
DATA_FILES = ["emotion/train.jsonl", "emotion/valid.jsonl"]
NEEDS_GPT2 = True


@dataclass
class FinetuneSettings:
    # our small GPT-2 (the offline default)
    epochs: int = quick_full(3, 4)                  # passes over the training data
    batch_size: int = quick_full(16, 16)            # examples per step
    lr: float = quick_full(1e-3, 5e-4)              # peak learning rate (cosine decay after warm-up)
    warmup_steps: int = quick_full(20, 100)         # linear warm-up steps
    # real GPT-2 weights (--gpt2): the book's settings
    real_epochs: int = quick_full(1, 2)             # the book: 2 (emotion_sft)
    real_lr: float = quick_full(5e-5, 5e-5)         # the book: 5e-5, constant
    real_batch_size: int = quick_full(16, 16)       # the book: 16
    real_max_train: int | None = quick_full(1000, None)  # first training examples (None: all)
    eval_batch: int = quick_full(64, 64)            # examples scored (generated) together
    val_batches: int = quick_full(4, 20)            # held-out batches for the logged val_loss


@dataclass
class Settings(FinetuneSettings):
    max_new_tokens: int = quick_full(10, 10)        # longest generated answer (a label is 1-5 tokens)


@dataclass
class Setup:
    folder: Path          # the GPT-2 folder (ours or --gpt2)
    real: bool            # real weights: the book's settings
    device: object        # torch device
    train: TrainConfig    # the engine's settings
    epochs: int           # passes over the training data
    max_train: int | None  # first training examples kept (None: all)
    base_model: str       # where the weights came from, for every metric


def setup(cfg: RunConfig, s: FinetuneSettings, data_dir: Path) -> Setup:
    """The base model and the training settings that go with it (ours or the book's)."""
    folder = pretrained_gpt2(cfg, data_dir)
    real = bool(cfg.gpt2)
    tcfg = train_config(real, s.real_lr if real else s.lr, s.real_batch_size if real else s.batch_size,
                        s.warmup_steps, s.val_batches, cfg.device, cfg.seed)
    return Setup(folder, real, choose_device(cfg.device), tcfg, s.real_epochs if real else s.epochs,
                 s.real_max_train if real else None, describe_base(folder, cfg.gpt2))


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:
    st = setup(cfg, s, data_dir)
    model = GPT2.from_pretrained(st.folder, device=st.device)
    tok = GPT2Tokenizer.from_dir(st.folder)
    data = load_emotion_data(data_dir, st.max_train)
    metrics = finetune_emotion_sft(model, tok, data, tok.eot_id, st.train, st.epochs, out_dir, s.max_new_tokens,
                                   s.eval_batch, desc="emotion_sft")
    metrics["base_model"] = st.base_model
    return metrics
