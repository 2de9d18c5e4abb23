"""GPT-2 classification head (5.6): the reference step, last real token by mask, labels in config.json."""
import json

import pytest
import torch

from conftest import SHARED_FIXTURES, needs_fixtures
from lm.checkpoints.hf import gpt2_to_hf
from lm.checkpoints.safetensors import load_safetensors
from lm.errors import ConfigError
from lm.finetune.classifier import (ClassificationExamples, classification_loss, classifier_from_lm, labels_of,
                                    predict, with_labels)
from lm.models.gpt2 import GPT2, GPT2Config, GPT2ForSequenceClassification
from lm.training.engine import TrainConfig, train

STEP = SHARED_FIXTURES / "gpt2_classifier_step"
LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]


class WordTokenizer:
    """Each known word one id (1..), unknown words 99."""
    vocab = {w: i + 1 for i, w in enumerate("i am so happy sad angry today very not the rain sun".split())}

    def encode(self, text):
        return [self.vocab.get(w, 99) for w in text.split()]

    def decode(self, ids):
        return " ".join(next((w for w, i in self.vocab.items() if i == t), "?") for t in ids)


def tiny_lm(tmp_path, seed=0):
    torch.manual_seed(seed)
    lm = GPT2(GPT2Config(vocab_size=100, n_positions=16, n_embd=16, n_layer=2, n_head=2, embd_pdrop=0.0,
                         attn_pdrop=0.0, resid_pdrop=0.0, eos_token_id=0))
    lm.save_pretrained(tmp_path / "lm")
    return tmp_path / "lm"


@needs_fixtures
def test_reference_logits_loss_and_gradients_on_a_right_padded_batch():
    fx = json.loads((STEP / "fixture.json").read_text())
    model = GPT2ForSequenceClassification.from_pretrained(SHARED_FIXTURES / "gpt2_classifier_safetensors").train()
    batch = {"input_ids": torch.tensor(fx["input_ids"]), "attention_mask": torch.tensor(fx["attention_mask"]),
             "targets": torch.tensor(fx["labels"])}
    logits = model(batch["input_ids"], attention_mask=batch["attention_mask"])
    assert (logits - torch.tensor(fx["logits"])).abs().max() < 1e-5
    loss, n = classification_loss(model, batch)
    assert n == 3 and abs(loss.item() - fx["loss"]) < 1e-5
    loss.backward()
    grads = gpt2_to_hf({k: p.grad for k, p in model.named_parameters()})
    reference = load_safetensors(STEP / "grads.safetensors")
    assert sorted(grads) == sorted(reference)
    for k, g in reference.items():
        assert (grads[k] - g).abs().max() < 1e-5, k


def test_collate_pads_right_and_the_head_reads_the_last_real_token(tmp_path):
    model = classifier_from_lm(tiny_lm(tmp_path), LABELS, pad_token_id=0).eval()
    tok = WordTokenizer()
    ex = ClassificationExamples(["i am so happy today", "sad"], ["joy", "sadness"], tok, model.config)
    b = ex.collate([0, 1])
    assert b["input_ids"].tolist() == [[1, 2, 3, 4, 7], [5, 0, 0, 0, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert b["targets"].tolist() == [1, 0]
    with torch.no_grad():
        batched = model(b["input_ids"], attention_mask=b["attention_mask"])
        alone = model(torch.tensor([[5]]))
    assert (batched[1] - alone[0]).abs().max() < 1e-5        # padding changes nothing
    # scoring at the last position instead (the book's padded rows) would give another answer
    with torch.no_grad():
        at_pad = model.score(model.transformer(b["input_ids"])[1, -1])
    assert (at_pad - alone[0]).abs().max() > 1e-4


def test_labels_travel_in_config_json(tmp_path):
    model = classifier_from_lm(tiny_lm(tmp_path), LABELS)
    assert model.config.pad_token_id == 0 and model.config.num_labels == 6    # pad = the LM's EOS
    model.save_pretrained(tmp_path / "cls")
    cfg = json.loads((tmp_path / "cls" / "config.json").read_text())
    assert cfg["id2label"] == {str(i): x for i, x in enumerate(LABELS)}
    assert cfg["label2id"] == {x: i for i, x in enumerate(LABELS)}
    assert cfg["architectures"] == ["GPT2ForSequenceClassification"]
    back = GPT2ForSequenceClassification.from_pretrained(tmp_path / "cls")
    assert labels_of(back.config) == LABELS
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(back(ids), model.eval()(ids))
    # the transformer is the LM's, the head is new
    lm = GPT2.from_pretrained(tmp_path / "lm")
    assert torch.equal(lm.transformer.wte.weight, back.transformer.wte.weight)


def test_bad_labels_and_texts_are_clear_errors(tmp_path):
    model = classifier_from_lm(tiny_lm(tmp_path), LABELS)
    tok = WordTokenizer()
    with pytest.raises(ConfigError, match="example 1: unknown label 'happy'"):
        ClassificationExamples(["i am", "so"], ["joy", "happy"], tok, model.config)
    with pytest.raises(ConfigError, match="example 0: the text is empty"):
        ClassificationExamples(["  "], ["joy"], tok, model.config)
    with pytest.raises(ConfigError, match="distinct"):
        with_labels(model.config, ["a", "a"], 0)
    with pytest.warns(UserWarning, match="1 of 1 texts are longer than the model's context"):
        ex = ClassificationExamples(["i " * 20 + "sad"], ["sadness"], tok, model.config)
    assert len(ex.seqs[0]) == 16 and ex.seqs[0][-1] == 5       # kept the end


def test_training_learns_a_keyword_task(tmp_path):
    model = classifier_from_lm(tiny_lm(tmp_path), LABELS, pad_token_id=0)
    tok = WordTokenizer()
    texts = [("i am so happy today", "joy"), ("the rain i am sad", "sadness"), ("i am very angry", "anger"),
             ("not happy i am sad today", "sadness"), ("the sun so happy", "joy"), ("angry the rain", "anger")] * 10
    ex = ClassificationExamples([t for t, _ in texts], [y for _, y in texts], tok, model.config)
    train(model, ex, None, TrainConfig(lr=3e-3, batch_size=12, max_steps=80, warmup_steps=5), None,
          loss_fn=classification_loss)
    pred = predict(model, ex, batch_size=7)
    assert [LABELS[p] for p in pred[:6]] == [y for _, y in texts[:6]]
