"""Stage emotion_sft (5.3.2): GPT-2 fine-tuned to *write* the emotion of a text.

Each training example is the book's prompt, "Predict the emotion for the following text:
{text}\\nEmotion:", with the label + EOS as the completion (loss on the completion only,
`lm.finetune.sft`). After every epoch the model answers every prompt of the eval split greedily
through the one generation path, and an answer counts when it equals the label after the book's
normalisation. The base is our small GPT-2 (the `emotion` base of `gpt2_pretrain`) unless
`--model FOLDER` (alias `--gpt2`) gives real weights, a GPT-2 or Qwen2 folder (config.json's
`model_type` decides; the answer then ends with the model's own EOS, `eos_token_id`), trained then
with the book's settings (AdamW 5e-5, batch 16, constant rate, no clipping; 2 epochs in --full).
We differ from the book in one detail: at most `max_new_tokens` = 10 new tokens (the book allows
50), since no label is longer.

The base and its settings come from `lm.finetune.base_model` and `lm.stages.FinetuneSettings`,
shared with the other fine-tuning stages.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lm.finetune.base_model import load_lm
from lm.finetune.emotion import finetune_emotion_sft, load_emotion_data
from lm.stages import EMOTION_FILES, EMOTION_KEY_METRICS, EmotionSettings, RunConfig, for_base, quick_full
from lm.stages.gpt2_pretrain import choose_base
from lm.utils import choose_device

KEY_METRICS, DATA_FILES = EMOTION_KEY_METRICS, EMOTION_FILES
NEEDS_GPT2 = USES_MODEL = True                    # the chapter 5 base, of any family


@dataclass
class Settings(EmotionSettings):
    epochs: int = quick_full(5, 5)                  # passes over train.jsonl (real data, seeds 0 / 1:
    #   5 epochs 0.907 / 0.894, 3 epochs 0.904 / 0.8735)
    batch_size: int = quick_full(32, 32)            # examples per step (64 learns slower: 0.902 / 0.891)
    max_new_tokens: int = quick_full(10, 10)        # longest generated answer (a label is 1-5 tokens)


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:
    base = choose_base(cfg, data_dir, "emotion")
    s = for_base(s, base.real)
    model, tok, eos = load_lm(base, choose_device(cfg.device))
    data = load_emotion_data(data_dir, s.max_train)
    metrics = finetune_emotion_sft(model, tok, data, eos, s.train_config(base.real, cfg), s.epochs, out_dir,
                                   s.max_new_tokens, s.eval_batch, desc="emotion_sft")
    metrics.update(base_model=base.source, base=base.budget)
    return metrics
