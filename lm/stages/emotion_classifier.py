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
from lm.finetune.classifier import classifier_from_lm
from lm.finetune.emotion import finetune_emotion_classifier, load_emotion_data
from lm.stages import RunConfig, quick_full
from lm.stages.emotion_sft import EmotionSettings, load_tokenizer, save_tokenizer, setup

KEY_METRICS = ["accuracy", "accuracy_valid", "eval_split"]
DATA_FILES = ["emotion/train.jsonl", "emotion/valid.jsonl"]
NEEDS_GPT2 = True
USES_MODEL = True


@dataclass
class Settings(EmotionSettings):
    real_epochs: int = quick_full(1, 8)             # with --gpt2 / --model (the book: 8)
    save_model: bool = quick_full(True, True)       # write the classifier to out_dir/model


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:
    st = setup(cfg, s, data_dir, "gpt2_emotion")
    tok = load_tokenizer(st)
    model = classifier_from_lm(st.folder, EMOTION_LABELS, pad_token_id=tok.eot_id, device=st.device)
    data = load_emotion_data(data_dir, st.max_train)
    metrics = finetune_emotion_classifier(model, tok, data, st.train, st.epochs, out_dir, s.eval_batch,
                                          desc="emotion_classifier")
    if s.save_model:
        model.save_pretrained(out_dir / "model")
        save_tokenizer(st, tok, out_dir / "model")
        metrics["model_dir"] = str(out_dir / "model")
    metrics.update(base_model=st.base_model, base=st.base)
    return metrics
