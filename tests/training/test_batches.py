"""One right-padding collate (`lm.training.batches.pad_right`): by hand, and bit-identical to the
five collates it replaced (their old bodies are copied here as the oracles)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_gpt2
from lm.errors import ConfigError
from lm.finetune.classifier import ClassificationExamples
from lm.finetune.cnn_data import WordVocab
from lm.finetune.sft import SFTExamples
from lm.labeling.embeddings import GPT2Embedder
from lm.labeling.lm_score import LMScorer
from lm.models.gpt2 import GPT2Config
from lm.training.batches import IGNORE_INDEX, SentenceExamples, pad_right


def test_pad_right_by_hand():
    ids, mask = pad_right([[5, 6, 7], np.array([8], dtype=np.int32), torch.tensor([9, 10])], pad_id=0)
    assert ids.dtype == mask.dtype == torch.long
    assert torch.equal(ids, torch.tensor([[5, 6, 7], [8, 0, 0], [9, 10, 0]]))
    assert torch.equal(mask, torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]]))
    ids, mask = pad_right([[1], []], pad_id=-100, length=4)
    assert ids.tolist() == [[1, -100, -100, -100], [-100] * 4] and mask.tolist() == [[1, 0, 0, 0], [0] * 4]
    ids, mask = pad_right([], pad_id=3, length=2)
    assert ids.shape == mask.shape == (0, 2)
    ids, mask = pad_right([[], []], pad_id=3)
    assert ids.shape == (2, 0)
    with pytest.raises(ConfigError, match="at least one sequence"):
        pad_right([], pad_id=0)
    with pytest.raises(ConfigError, match="does not fit the length 2"):
        pad_right([[1, 2, 3]], pad_id=0, length=2)


# ---------------------------------------------------------------------------------------------
# The old collates, verbatim
# ---------------------------------------------------------------------------------------------

def old_sentence_collate(self, indices):
    lens = [int(self.lengths[i]) for i in indices]
    T = max(lens) - 1
    x = torch.full((len(indices), T), self.pad_id, dtype=torch.long)
    y = torch.full((len(indices), T), IGNORE_INDEX, dtype=torch.long)
    for row, (i, n) in enumerate(zip(indices, lens)):
        seq = torch.from_numpy(self.ids[self.offsets[i]:self.offsets[i] + n].astype(np.int64))
        x[row, :n - 1] = seq[:-1]
        y[row, :n - 1] = seq[1:]
    return {"input_ids": x, "targets": y}


def old_sft_collate(self, indices):
    T = max(len(self.seqs[i]) for i in indices) - 1
    x = torch.full((len(indices), T), self.pad_id, dtype=torch.long)
    mask = torch.zeros((len(indices), T), dtype=torch.long)
    y = torch.full((len(indices), T), IGNORE_INDEX, dtype=torch.long)
    for row, i in enumerate(indices):
        seq = torch.from_numpy(self.seqs[i])
        n, p = len(seq), 1 if self.train_on_prompt else int(self.prompt_lengths[i])
        x[row, :n - 1] = seq[:-1]
        mask[row, :n - 1] = 1
        y[row, p - 1:n - 1] = seq[p:]
    return {"input_ids": x, "attention_mask": mask, "targets": y}


def old_classification_collate(self, indices):
    T = max(len(self.seqs[i]) for i in indices)
    x = torch.full((len(indices), T), self.pad_id, dtype=torch.long)
    mask = torch.zeros((len(indices), T), dtype=torch.long)
    for row, i in enumerate(indices):
        n = len(self.seqs[i])
        x[row, :n] = torch.from_numpy(self.seqs[i])
        mask[row, :n] = 1
    return {"input_ids": x, "attention_mask": mask, "targets": torch.from_numpy(self.targets[list(indices)])}


def old_encode_batch(vocab, texts, seq_len):
    def encode(text):
        ids = [vocab.lookup(w) for w in text.split()[:seq_len]]
        return ids + [0] * (seq_len - len(ids))
    return torch.tensor([encode(t) for t in texts], dtype=torch.long)


@torch.no_grad()
def old_pooled(self, texts):
    ids = [self.tokenizer.encode_ordinary(t)[: self.max_tokens] or [0] for t in texts]
    device = next(self.transformer.parameters()).device
    out = np.zeros((len(texts), self.transformer.config.n_embd), dtype=np.float32)
    order = np.argsort([len(x) for x in ids], kind="stable")
    for start in range(0, len(order), self.batch_size):
        rows = order[start:start + self.batch_size]
        T = max(len(ids[i]) for i in rows)
        batch = torch.zeros((len(rows), T), dtype=torch.long)
        mask = torch.zeros((len(rows), T), dtype=torch.long)
        for r, i in enumerate(rows):
            batch[r, :len(ids[i])] = torch.tensor(ids[i])
            mask[r, :len(ids[i])] = 1
        batch, mask = batch.to(device), mask.to(device)
        h = self.transformer(batch, attention_mask=mask).float()
        m = mask[..., None].float()
        out[rows] = ((h * m).sum(1) / m.sum(1)).cpu().numpy()
    return out


@torch.no_grad()
def old_score_batch(self, prompts, cands):
    model, device = self.model, next(self.model.parameters()).device
    B, P = len(prompts), max(len(p) for p in prompts)
    C = max(len(c) for cs in cands for c in cs)
    owner = torch.tensor([b for b, cs in enumerate(cands) for _ in cs], device=device)
    flat = [c for cs in cands for c in cs]
    R = len(flat)
    ids = torch.zeros((B, P), dtype=torch.long, device=device)
    pmask = torch.zeros((B, P), dtype=torch.long, device=device)
    for b, p in enumerate(prompts):
        ids[b, P - len(p):] = torch.tensor(p, device=device)
        pmask[b, P - len(p):] = 1
    one = model.new_cache(B, P)
    first = model(ids, attention_mask=pmask, cache=one, last_only=True)
    first = torch.log_softmax(first[:, -1].float(), -1)[owner]
    cache = model.new_cache(R, P + C)
    cache.k[:, :, :, :P] = one.k[:, owner, :, :P]
    cache.v[:, :, :, :P] = one.v[:, owner, :, :P]
    cache.length = P
    cids = torch.zeros((R, C), dtype=torch.long, device=device)
    real = torch.zeros((R, C), dtype=torch.bool, device=device)
    for r, c in enumerate(flat):
        cids[r, :len(c)] = torch.tensor(c, device=device)
        real[r, :len(c)] = True
    mask = torch.cat([pmask[owner], real.long()], 1)
    logits = model(cids, attention_mask=mask, cache=cache)[:, :-1].float()
    tok = torch.empty((R, C), device=device)
    tok[:, 0] = first.gather(-1, cids[:, :1])[:, 0]
    tok[:, 1:] = logits.gather(-1, cids[:, 1:, None])[..., 0] - logits.logsumexp(-1)
    sums = (tok * real).sum(1).cpu().numpy()
    bounds = np.cumsum([0] + [len(cs) for cs in cands])
    return [sums[bounds[b]:bounds[b + 1]] for b in range(B)]


def same_batch(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


BATCHES = [[0], [1, 0], [2, 3, 1], [4, 2, 0, 3], [3, 3]]


# ---------------------------------------------------------------------------------------------
# Every collate == its old body
# ---------------------------------------------------------------------------------------------

def test_sentence_examples_collate_as_before():
    rng = np.random.default_rng(0)
    lengths = [1, 5, 9, 2, 7]
    ids = rng.integers(0, 50, size=sum(lengths)).astype(np.int32)
    ex = SentenceExamples(ids, np.concatenate([[0], np.cumsum(lengths)]), context=6, pad_id=3)
    for b in BATCHES:
        assert same_batch(ex.collate(b), old_sentence_collate(ex, b)), b


@pytest.mark.parametrize("train_on_prompt", [False, True])
def test_sft_examples_collate_as_before(train_on_prompt):
    seqs = [[5, 6, 7, 0], [5, 9], [1, 2, 3, 4, 5, 6, 7], [8, 8, 8], [4, 0, 0, 0, 2]]
    ex = SFTExamples.from_token_ids(seqs, prompt_lengths=[2, 1, 4, 2, 1], pad_id=0, train_on_prompt=train_on_prompt)
    for b in BATCHES:
        assert same_batch(ex.collate(b), old_sft_collate(ex, b)), b


class WordTok:
    def encode(self, text):
        return [ord(c) % 40 for c in text]


def test_classification_examples_collate_as_before():
    cfg = GPT2Config(vocab_size=40, n_positions=6, n_embd=8, n_layer=1, n_head=1, eos_token_id=7,
                     extra={"id2label": {"0": "a", "1": "b"}})
    with pytest.warns(UserWarning, match="1 of 5 texts are longer"):
        ex = ClassificationExamples(["hi", "hello", "x", "a longer text", "abc"], ["a", "b", "a", "b", "b"],
                                    WordTok(), cfg)
    for b in BATCHES:
        assert same_batch(ex.collate(b), old_classification_collate(ex, b)), b


def test_cnn_rows_as_before():
    vocab = WordVocab(["happy", "I", "feel"])
    texts = ["I feel HAPPY today", "happy", "i i i i i i i i", "sad and blue"]
    for seq_len in (1, 3, 6):
        new, old = vocab.encode_batch(texts, seq_len), old_encode_batch(vocab, texts, seq_len)
        assert new.dtype == old.dtype and torch.equal(new, old)
        assert [vocab.encode(t, seq_len) for t in texts] == old.tolist()


def test_labellers_pad_as_before():
    """GPT2Embedder's batches and LMScorer's prompts and candidates: the same numbers, bit for bit."""
    model, tok = tiny_gpt2(["the cat sat on the mat", "a dog ran in the park"], 64)
    texts = ["the cat", "a dog ran in the park", "x", "the cat sat on the mat and more", "dog"]
    emb = GPT2Embedder(model, tok, batch_size=2)
    assert np.array_equal(emb._pooled(texts), old_pooled(emb, texts))
    sc = LMScorer(model, tok, taxonomy=None)
    prompts = [tok.encode(t) for t in texts[:3]]
    cands = [[tok.encode(" cat"), tok.encode(" a park")], [tok.encode(" x")], [tok.encode(" the mat"), [5], [6, 7]]]
    for new, old in zip(sc.score_batch(prompts, cands), old_score_batch(sc, prompts, cands)):
        assert np.array_equal(new, old)
