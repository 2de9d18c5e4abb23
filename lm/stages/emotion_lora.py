"""Stage emotion_lora (5.5.2): emotion as text generation again, training only LoRA adapters.

The same task and evaluation as emotion_sft, but GPT-2's weights stay frozen: LoRA adds a
trainable low-rank update (alpha / r) B A to the chosen projections (`lm.finetune.lora`). The
adapter is saved in PEFT's folder format in out_dir/adapter (loadable with `peft`).

With real weights (--gpt2) the book's setting: r 16, alpha 32 on `c_attn` (PEFT's default for
GPT-2), AdamW 5e-5, batch 16, 18 epochs in --full. Our small GPT-2 needs more: its tied output
layer cannot put more than about 2 % probability on the labels' letter tokens whatever the layers
below it compute (measured: those rarely seen tokens' embeddings sit inside the others' hull), so
no adapter below the output layer can teach it to write "joy". For it we untie the output layer
(`lm_head`, a copy of `wte`: same logits) and LoRA-wrap it too, with every projection; the untied
base is saved in out_dir/base, the adapter's base model for PEFT.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lm.finetune.emotion import describe_base, finetune_emotion_sft, load_emotion_data, train_config
from lm.finetune.lora import LoRAConfig, add_lora, count_parameters, save_adapter, untie_output_layer
from lm.models.gpt2 import GPT2
from lm.stages import RunConfig, quick_full
from lm.stages.gpt2_pretrain import pretrained_gpt2
from lm.tokenizers.gpt2 import GPT2Tokenizer
from lm.utils import choose_device

KEY_METRICS = ["accuracy", "trainable_parameters", "accuracy_valid"]
DATA_FILES = ["emotion/train.jsonl", "emotion/valid.jsonl"]
NEEDS_GPT2 = True


@dataclass
class Settings:
    r: int = quick_full(16, 16)                     # LoRA rank (the book: 16)
    alpha: float = quick_full(32.0, 32.0)           # scaling = alpha / r (the book: 32)
    dropout: float = quick_full(0.0, 0.0)           # dropout on the adapter's input (the book: PEFT's 0)
    # our small GPT-2 (the offline default)
    targets: list = quick_full(["c_attn", "c_proj", "c_fc", "lm_head"], ["c_attn", "c_proj", "c_fc", "lm_head"])
    #   ^ wrapped projections; "lm_head" unties the output layer first
    epochs: int = quick_full(3, 8)                  # passes over train.jsonl
    batch_size: int = quick_full(16, 16)            # examples per step
    lr: float = quick_full(1e-2, 5e-3)              # peak learning rate (cosine decay after warm-up)
    warmup_steps: int = quick_full(20, 100)         # linear warm-up steps
    # real GPT-2 weights (--gpt2): the book's settings
    real_targets: list = quick_full(["c_attn"], ["c_attn"])   # the book: PEFT's default for GPT-2
    real_epochs: int = quick_full(1, 18)            # the book: 18
    real_lr: float = quick_full(5e-5, 5e-5)         # the book: 5e-5, constant
    real_batch_size: int = quick_full(16, 16)       # the book: 16
    real_max_train: int | None = quick_full(1000, None)  # first examples of train.jsonl (None: all)
    max_new_tokens: int = quick_full(10, 10)        # longest generated answer (a label is 1-5 tokens)
    eval_batch: int = quick_full(64, 64)            # prompts generated together
    val_batches: int = quick_full(4, 20)            # batches of valid.jsonl for the logged val_loss


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:
    folder = pretrained_gpt2(cfg, data_dir)
    device = choose_device(cfg.device)
    real = bool(cfg.gpt2)
    model = GPT2.from_pretrained(folder, device=device)
    tok = GPT2Tokenizer.from_dir(folder)
    targets = list(s.real_targets if real else s.targets)
    base_dir = cfg.gpt2 or str(folder)
    if "lm_head" in targets and model.lm_head is None:
        model = untie_output_layer(model)
        model.save_pretrained(out_dir / "base")
        tok.save(out_dir / "base")
        base_dir = str(out_dir / "base")
    lora = LoRAConfig(r=s.r, alpha=s.alpha, dropout=s.dropout, target_modules=targets)
    add_lora(model, lora)
    trainable, total = count_parameters(model)
    data = load_emotion_data(data_dir, s.real_max_train if real else None)
    tcfg = train_config(real, s.real_lr if real else s.lr, s.real_batch_size if real else s.batch_size,
                        s.warmup_steps, s.val_batches, cfg.device, cfg.seed)
    metrics = finetune_emotion_sft(model, tok, data, tok.eot_id, tcfg, s.real_epochs if real else s.epochs,
                                   out_dir, s.max_new_tokens, s.eval_batch, desc="emotion_lora")
    save_adapter(model, out_dir / "adapter", base_model_name_or_path=base_dir)
    metrics.update(trainable_parameters=trainable, total_parameters=total,
                   trainable_share=round(trainable / total, 5), lora={"r": s.r, "alpha": s.alpha,
                                                                        "target_modules": lora.target_modules},
                   adapter_dir=str(out_dir / "adapter"), adapter_base=base_dir,
                   base_model=describe_base(folder, cfg.gpt2))
    return metrics
