"""Stage emotion_cnn (book 5.3.1, `emotion_classifier_CNN.ipynb`): a convolutional emotion classifier.

The book's `CNNTextClassifier` (`lm.finetune.baselines.CNNClassifier`): whitespace tokens -> word
vectors -> Conv1d(k3)+ReLU -> Conv1d(k3)+ReLU -> flatten -> Linear -> Linear, 100 tokens per
text, AdamW lr 1e-3 (constant), batch 32, 2 epochs, cross-entropy, trained by the one engine on
emotion/train.jsonl. Book: 0.8830 after epoch 1, 0.9055 after epoch 2 (its own test split).

We differ in one way: the book feeds fixed pretrained 300-d word2vec vectors (a 1.5 GB download);
here the embeddings are learned from the training split, unless a word2vec file is given
(`Settings.word_vectors`, or `emotion/vectors.dat` in the data dir, the book's file name), which
is then read by `lm.finetune.word_vectors` and used frozen, as the book does.

`accuracy` is on `eval_split` (test.jsonl when the data dir has one, else valid.jsonl) after the
last epoch, `accuracy_per_epoch` after each; nothing is chosen on it. --full is the book's size;
--quick narrows the network (128-d embeddings, 128 and 64 channels, 32 tokens) and takes 3 epochs
of batches of 16 over the 4,000 toy texts (chosen on valid.jsonl), so it trains in seconds.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lm.data.loaders import optional_file
from lm.finetune.baselines import CNNClassifier, CNNConfig, label_ids
from lm.finetune.cnn_data import (ClassificationExamples, WordVocab, classification_loss, lookup_words,
                                  predict_classes, vocab_from_vectors)
from lm.finetune.emotion import load_emotion_data
from lm.finetune.epochs import train_by_epoch
from lm.finetune.metrics import accuracy, confusion
from lm.finetune.word_vectors import load_word_vectors
from lm.stages import EMOTION_FILES, RunConfig, quick_full
from lm.training.engine import TrainConfig
from lm.utils import say, torch_threads

DATA_FILES = EMOTION_FILES
NEEDS_GPT2 = False
KEY_METRICS = ["accuracy", "eval_split", "seconds"]
VECTORS_FILE = "emotion/vectors.dat"   # optional: word2vec vectors in the data dir (the book's name)


@dataclass
class Settings:
    emb_dim: int = quick_full(128, 300)     # learned embedding width (the book's word2vec: 300)
    channels1: int = quick_full(128, 512)   # first convolution's channels (the book: 512)
    channels2: int = quick_full(64, 256)    # second convolution's channels (the book: 256)
    hidden: int = 128                       # first linear layer's width (the book: 128)
    seq_len: int = quick_full(32, 100)      # tokens per text, truncated or zero-padded (the book: 100;
                                            # the toy texts have at most 21 words)
    min_count: int = 1                      # learned vocabulary: train words seen at least this often
    epochs: int = quick_full(3, 2)          # passes over train.jsonl (the book: 2)
    batch_size: int = quick_full(16, 32)    # examples per step (the book: 32)
    lr: float = 1e-3                        # AdamW, constant (the book: 0.001, no schedule)
    weight_decay: float = 0.01              # AdamW's default, as the book (matrices only here)
    word_vectors: str | None = None         # word2vec file (binary or text, .gz ok); None: VECTORS_FILE if present
    threads: int | None = quick_full(1, None)  # torch CPU threads while training (None: torch's; --threads
                                               # wins): the quick network's operations are too small to share


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:
    data = load_emotion_data(data_dir)
    train_set, valid, evaluation, split = data.train, data.valid, data.eval, data.eval_split
    classes = sorted({e.label for e in train_set})          # the book: sorted(set(labels))
    shown = sorted(set(classes) | {e.label for e in evaluation})

    vectors_path = s.word_vectors or optional_file(data_dir, VECTORS_FILE)
    if vectors_path:
        wanted = lookup_words(e.text for e in train_set + valid + evaluation)
        wv = load_word_vectors(vectors_path, keep=wanted)
        vocab, table = vocab_from_vectors(wv)
        emb_dim, embeddings = wv.dim, f"word2vec {vectors_path} ({len(wv.words)} of the words used, frozen)"
    else:
        vocab, table = WordVocab.from_texts((e.text for e in train_set), s.min_count), None
        emb_dim, embeddings = s.emb_dim, f"learned ({len(vocab) - 1} train words)"
    mcfg = CNNConfig(vocab_size=len(vocab), num_classes=len(classes), emb_dim=emb_dim, channels1=s.channels1,
                     channels2=s.channels2, hidden=s.hidden, seq_len=s.seq_len, freeze_embeddings=table is not None)
    model = CNNClassifier(mcfg, table)

    def examples(data):
        return vocab.encode_batch([e.text for e in data], s.seq_len)     # (N, L)
    train_ex = ClassificationExamples(examples(train_set), label_ids([e.label for e in train_set], classes, "train"))
    valid_ids, eval_ids = examples(valid), examples(evaluation)
    valid_known = [e for e in valid if e.label in classes]               # the engine's val_loss needs known labels
    valid_ex = ClassificationExamples(examples(valid_known), label_ids([e.label for e in valid_known], classes, "valid"))

    def predictions(m, ids):
        return [classes[i] for i in predict_classes(m, ids).tolist()]

    true_eval = [e.label for e in evaluation]

    def score(m):   # after every epoch
        return {"accuracy": accuracy(true_eval, predictions(m, eval_ids))}

    tcfg = TrainConfig(lr=s.lr, schedule="constant", weight_decay=s.weight_decay, grad_clip=0.0,
                       batch_size=s.batch_size, eval_batches=None,
                       log_interval=max(1, len(train_ex) // s.batch_size // 10), device=cfg.device, seed=cfg.seed)
    with torch_threads(cfg.threads or s.threads):
        res = train_by_epoch(model, train_ex, valid_ex, tcfg, s.epochs, out_dir, loss_fn=classification_loss,
                             score=score, desc="emotion_cnn")
        pred_eval = predictions(model, eval_ids)
        pred_valid = predictions(model, valid_ids)
    per_epoch = [e["accuracy"] for e in res["per_epoch"]]
    metrics = {
        "accuracy": accuracy(true_eval, pred_eval),
        "eval_split": split,
        "accuracy_valid": accuracy([e.label for e in valid], pred_valid),
        "accuracy_per_epoch": per_epoch,
        "confusion": confusion(true_eval, pred_eval, shown),
        "majority_accuracy": accuracy(true_eval, [Counter(e.label for e in train_set).most_common(1)[0][0]] * len(true_eval)),
        "embeddings": embeddings,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "train_loss": res["train_loss"], "val_loss": res.get("val_loss"),
        "steps": res["steps"], "seconds": res["seconds"],
    }
    say(f"emotion_cnn: accuracy {metrics['accuracy']:.4f} on {split} (per epoch {per_epoch}), "
        f"{metrics['accuracy_valid']:.4f} on valid; embeddings {embeddings}; {res['seconds']:.0f} s")
    return metrics
