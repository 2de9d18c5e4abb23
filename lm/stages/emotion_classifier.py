"""Stage emotion_classifier (5.6): GPT-2 (or Qwen2) with a `score` head read at each text's last real token.

The GPT-2 language model's transformer gets a new linear head (n_embd -> 6 labels, no bias),
read at the last real token of each right-padded text (found from the attention mask), trained
with cross-entropy on train.jsonl (`lm.finetune.classifier`). The fine-tuned classifier is saved
in out_dir/model as a Hugging Face folder whose config.json holds id2label / label2id. The book
pads with id 0 while its pad id is 50256, so its padded rows are scored at a pad position: we
read the real last token instead. Base and settings as in emotion_sft (the book: 8 epochs); with
`--model` a Qwen2 folder gets Qwen2's own classifier (`Qwen2ForSequenceClassification`), padded
with its `<|endoftext|>` (Qwen's pad token) and read at the last real token the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lm.data.loaders import EMOTION_LABELS
from lm.finetune.base_model import save_tokenizer
from lm.finetune.classifier import classifier_from_lm
from lm.finetune.emotion import finetune_emotion_classifier, load_emotion_data
from lm.stages import EMOTION_FILES, EMOTION_KEY_METRICS, EmotionSettings, RunConfig, for_base, quick_full
from lm.stages.gpt2_pretrain import choose_base
from lm.tokenizers.hf_json import tokenizer_from_dir
from lm.utils import choose_device

KEY_METRICS, DATA_FILES = EMOTION_KEY_METRICS, EMOTION_FILES
NEEDS_GPT2 = USES_MODEL = True                    # the chapter 5 base, of any family


@dataclass
class Settings(EmotionSettings):
    real_epochs: int = quick_full(1, 8)             # with --model / --gpt2 (the book: 8)
    save_model: bool = quick_full(True, True)       # write the classifier to out_dir/model


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:
    base = choose_base(cfg, data_dir, "emotion")
    s = for_base(s, base.real)
    tok = tokenizer_from_dir(base.folder)
    model = classifier_from_lm(base.folder, EMOTION_LABELS, pad_token_id=tok.eot_id, device=choose_device(cfg.device))
    data = load_emotion_data(data_dir, s.max_train)
    metrics = finetune_emotion_classifier(model, tok, data, s.train_config(base.real, cfg), s.epochs, out_dir,
                                          s.eval_batch, desc="emotion_classifier")
    if s.save_model:
        model.save_pretrained(out_dir / "model")
        save_tokenizer(base, out_dir / "model")
        metrics["model_dir"] = str(out_dir / "model")
    metrics.update(base_model=base.source, base=base.budget)
    return metrics
