"""The training engine: schedule, optimizer groups, evaluation, accumulation, checkpoints, resume."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import tiny_gpt2
from lm.errors import ConfigError
from lm.inference.generate import generate
from lm.data.loaders import iter_lines
from lm.training.batches import IGNORE_INDEX, PackedExamples, SentenceExamples, as_examples, encode_lines
from lm.pretraining.corpus import mask_digits
from lm.pretraining.pretrain import book_samples
from lm.training.engine import (TrainConfig, evaluate, iter_batches, load_checkpoint, lm_loss, lr_at, make_optimizer, save_checkpoint, train)
from lm.models.transformer import DecoderConfig, DecoderLanguageModel


def tiny_model(seed: int = 0, vocab: int = 30) -> DecoderLanguageModel:
    torch.manual_seed(seed)
    return DecoderLanguageModel(DecoderConfig(vocab, emb_dim=16, num_heads=2, num_blocks=1))


def tokens(n: int = 2000, vocab: int = 30, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


# --- data ------------------------------------------------------------------------------------

def test_mask_digits_and_streamed_lines(tmp_path):
    assert mask_digits("Up 12.5 pct in 1987") == "Up ##.# pct in ####"
    p = tmp_path / "t.txt"
    p.write_text("a 1\n\n  b 22  \nc\n", encoding="utf-8")
    assert list(iter_lines(p, mask_digits)) == ["a #", "b ##", "c"]
    assert list(iter_lines(p, max_lines=2)) == ["a 1", "b 22"]


def test_sentence_examples_pad_and_ignore():
    ids, offsets = np.array([5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7]), np.array([0, 3, 5, 12])
    ex = SentenceExamples(ids, offsets, context=4, pad_id=0)
    b = ex.collate([0, 1, 2])
    assert b["input_ids"].tolist() == [[5, 6, 0, 0], [8, 0, 0, 0], [1, 2, 3, 4]]
    assert b["targets"].tolist() == [[6, 7, -100, -100], [9, -100, -100, -100], [2, 3, 4, 5]]
    assert ex.n_targets() == 2 + 1 + 4


def test_packed_examples_windows():
    ex = PackedExamples(np.arange(11), context=5)
    assert len(ex) == 2
    b = ex.collate([1, 0])
    assert b["input_ids"].tolist() == [[5, 6, 7, 8, 9], [0, 1, 2, 3, 4]]
    assert b["targets"].tolist() == [[6, 7, 8, 9, 10], [1, 2, 3, 4, 5]]
    with pytest.raises(ConfigError, match="shorter than context"):
        PackedExamples(np.arange(3), context=5)


class CharTok:
    """A stand-in tokenizer: one id per lowercase letter, 26 = space."""
    vocab_size = 28

    def encode(self, text):
        return [26 if c == " " else ord(c) - 97 for c in text]

    def decode(self, ids):
        return "".join(" " if i == 26 else chr(i + 97) for i in ids if i < 27)


def test_encode_lines_offsets_and_eos():
    flat, off = encode_lines(["ab", "c", "de f"], CharTok(), eos_id=27)
    assert off.tolist() == [0, 3, 5, 10]
    assert flat[off[2]:off[3]].tolist() == [3, 4, 26, 5, 27]


# --- schedule, optimizer, loss ------------------------------------------------------------------

def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(lr=1.0, warmup_steps=4, min_lr_ratio=0.1)
    assert [lr_at(s, cfg, 14) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, cfg, 14) == pytest.approx(1.0)
    assert lr_at(13, cfg, 14) == pytest.approx(0.1)
    mid = 4 + (14 - 4 - 1) / 2
    assert lr_at(int(mid), cfg, 14) < 1.0
    assert lr_at(9, TrainConfig(lr=1.0, warmup_steps=4, min_lr_ratio=0.1), 14) == pytest.approx(
        0.1 + 0.45 * (1 + math.cos(math.pi * 5 / 9)))
    assert lr_at(10, TrainConfig(lr=0.5, schedule="constant"), 20) == 0.5


def test_optimizer_decays_matrices_only():
    m = tiny_model()
    opt = make_optimizer(m, TrainConfig(weight_decay=0.1))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(m.parameters()))


def test_lm_loss_ignores_padding_and_evaluate_weights_by_tokens():
    m = tiny_model()
    x = torch.tensor([[1, 2, 3], [4, 5, 6]])
    y = torch.tensor([[2, 3, IGNORE_INDEX], [5, IGNORE_INDEX, IGNORE_INDEX]])
    loss, n = lm_loss(m, {"input_ids": x, "targets": y})
    logp = torch.log_softmax(m(x), -1)
    by_hand = -(logp[0, 0, 2] + logp[0, 1, 3] + logp[1, 0, 5]) / 3
    assert n == 3 and loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    b1 = {"input_ids": x[:1], "targets": y[:1]}
    b2 = {"input_ids": x[1:], "targets": y[1:]}
    res = evaluate(m, [b1, b2])
    l1, _ = lm_loss(m, b1)
    l2, _ = lm_loss(m, b2)
    assert res["tokens"] == 3
    assert res["loss"] == pytest.approx((2 * l1.item() + l2.item()) / 3, rel=1e-5)
    assert res["perplexity"] == pytest.approx(math.exp(res["loss"]))


def test_gradient_accumulation_equals_one_big_batch():
    data = PackedExamples(tokens(), context=8)
    a, b = tiny_model(1), tiny_model(1)
    base = dict(max_steps=3, context=8, device="cpu", grad_clip=0.5, warmup_steps=1)
    train(a, data, None, TrainConfig(batch_size=8, grad_accum=1, **base), None)
    train(b, data, None, TrainConfig(batch_size=4, grad_accum=2, **base), None)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


# --- the loop, checkpoints, resume ------------------------------------------------------------

def test_training_lowers_loss_and_writes_metrics(tmp_path):
    m = tiny_model()
    data = tokens(3000)
    data[1::2] = (data[::2][:1500] + 1) % 30  # every second token is predictable from the one before
    cfg = TrainConfig(max_steps=60, batch_size=16, context=10, lr=1e-2, eval_interval=30, device="cpu")
    before = evaluate(m, iter_batches(as_examples(data[:600], 10), 16))
    out = train(m, data, data[:600], cfg, tmp_path)
    assert out["val_loss"] < before["loss"] - 0.5
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "val_loss" in r] == [30, 60]
    assert out["steps"] == 60 and not (tmp_path / "summary.json").exists()   # run_all and CLIs write summaries


@pytest.mark.parametrize("accum", [1, 2])
def test_resume_is_exact(tmp_path, accum):
    data, val = tokens(3000), tokens(400, seed=1)
    cfg = TrainConfig(max_steps=12, batch_size=4, grad_accum=accum, context=8, warmup_steps=3,
                      checkpoint_interval=5, eval_interval=6, device="cpu", seed=3)
    straight = tiny_model(7)
    train(straight, data, val, cfg, tmp_path / "a")
    first = tiny_model(7)
    train(first, data, val, cfg, tmp_path / "b", stop_after=6)
    resumed = tiny_model(99)  # different weights: everything must come from the checkpoint
    m = train(resumed, data, val, cfg, tmp_path / "b", resume=True)
    assert m["steps"] == 12
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    assert not list((tmp_path / "b").glob("*.tmp"))  # atomic writes leave no temp files


def test_group_by_length_batches_similar_lengths_and_visits_each_example_once():
    from lm.training.engine import _Order
    lengths = [int(x) for x in torch.randint(3, 60, (203,), generator=torch.Generator().manual_seed(0))]
    plain = _Order(203, 8, True, 0)
    grouped = _Order(203, 8, True, 0, lengths=lengths, group=5)
    for order in (plain, grouped):
        seen = [i for _ in range(203 // 8) for i in order.next()]
        assert len(seen) == len(set(seen)) == 203 // 8 * 8               # one epoch: no example twice
    def padding(order):                                                   # padded positions in one epoch
        return sum(8 * max(lengths[i] for i in b) - sum(lengths[i] for i in b)
                   for b in (order.next() for _ in range(203 // 8)))
    assert padding(_Order(203, 8, True, 0, lengths=lengths, group=5)) < 0.4 * padding(_Order(203, 8, True, 0))
    again = _Order(203, 8, True, 0, lengths=lengths, group=5)
    first = [again.next() for _ in range(25)]
    assert first == [_Order(203, 8, True, 0, lengths=lengths, group=5).next() for _ in range(1)] + first[1:]
    assert first != [_Order(203, 8, True, 1, lengths=lengths, group=5).next() for _ in range(25)]  # seeded
    assert first[0] != sorted(first[0])                                   # batches shuffled, not in length order
    with pytest.raises(ConfigError, match="group_by_length"):
        TrainConfig(group_by_length=-1).validate()


def test_group_by_length_needs_lengths_and_resumes_exactly(tmp_path):
    from lm.finetune.sft import SFTExamples
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(1, 30, (int(n),), generator=g).tolist() for n in torch.randint(4, 20, (64,), generator=g)]
    ex = SFTExamples.from_token_ids(seqs, [2] * 64, pad_id=0)
    cfg = TrainConfig(max_steps=10, batch_size=4, group_by_length=3, checkpoint_interval=4, device="cpu", seed=2)
    straight = tiny_model(7)
    train(straight, ex, ex, cfg, tmp_path / "a")
    train(tiny_model(7), ex, ex, cfg, tmp_path / "b", stop_after=5)
    resumed = tiny_model(99)
    train(resumed, ex, ex, cfg, tmp_path / "b", resume=True)
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(ConfigError, match="lengths"):
        train(tiny_model(), tokens(400), None, TrainConfig(max_steps=1, batch_size=4, context=8, group_by_length=2),
              None)


def test_checkpoint_is_weights_only_and_round_trips(tmp_path):
    m = tiny_model()
    opt = make_optimizer(m, TrainConfig())
    m(torch.zeros(1, 3, dtype=torch.long)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "c.pt", m, opt, {"step": 1, "note": "x"})
    raw = torch.load(tmp_path / "c.pt", weights_only=True)  # no pickled objects inside
    assert raw["state"] == {"step": 1, "note": "x"}
    m2 = tiny_model(5)
    opt2 = make_optimizer(m2, TrainConfig())
    assert load_checkpoint(tmp_path / "c.pt", m2, opt2)["step"] == 1
    for p, q in zip(m.parameters(), m2.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="bad.pt cannot be read"):
        load_checkpoint(tmp_path / "bad.pt", m2)


def test_resume_with_a_different_config_is_refused(tmp_path):
    data = tokens()
    cfg = TrainConfig(max_steps=4, batch_size=4, context=8, device="cpu")
    train(tiny_model(), data, None, cfg, tmp_path, stop_after=2)
    with pytest.raises(ConfigError, match="config differs in lr"):
        train(tiny_model(), data, None, TrainConfig(max_steps=4, batch_size=4, context=8, lr=0.5), tmp_path,
              resume=True)


def test_bad_train_configs():
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig(batch_size=0).validate()
    with pytest.raises(ConfigError, match="schedule"):
        TrainConfig(schedule="linear").validate()
    with pytest.raises(ConfigError, match="fewer than batch_size"):
        train(tiny_model(), tokens(50), None, TrainConfig(max_steps=1, batch_size=64, context=8), None)
    assert TrainConfig(max_tokens=1000, batch_size=4, context=10).total_steps(10**6) == 25


def old_book_samples(model, tokenizer, eos_id, max_new_tokens, contexts):
    """book_samples as it was before the completion helper (lm/inference/complete.py): the oracle
    (`contexts`: the book's prompts, BOOK_CONTEXTS)."""
    was_training = model.training
    model.eval()
    ids = [tokenizer.encode(p) for p in contexts]
    out = generate(model, ids, max_new_tokens, stop_token_ids=[eos_id] if eos_id is not None else [],
                   pad_token_id=eos_id)
    model.train(was_training)
    T = max(len(i) for i in ids)
    texts = {}
    for prompt, prompt_ids, row in zip(contexts, ids, out[:, T:].tolist()):
        new = row[:row.index(eos_id)] if eos_id in row else row
        texts[prompt] = tokenizer.decode(prompt_ids + new)
    return texts


def test_book_samples_are_what_the_old_body_gave():
    """Through the completion helper: the same texts as the old body, for a stop token that comes at
    different steps in different rows, one that never comes, and none; the training mode is restored."""
    model, tok = tiny_gpt2(["Moscow New York The hurricane The President", "rain fell on the city"], 64)
    with torch.no_grad():    # large position embeddings: answers that change from step to step
        model.transformer.wpe.weight.copy_(torch.randn(64, 32, generator=torch.Generator().manual_seed(1)))
    contexts = list(book_samples(model, tok, None, 12))               # the book's prompts, in order
    free = old_book_samples(model, tok, None, 12, contexts)
    ids = [tok.encode(p) for p in contexts]
    eos = int(generate(model.eval(), ids, 12)[0, -6])                # a token Moscow's answer holds
    model.train()
    for eos_id in (eos, tok.eot_id, None):
        assert book_samples(model, tok, eos_id, 12) == old_book_samples(model, tok, eos_id, 12, contexts)
        assert model.training
    cut = book_samples(model, tok, eos, 12)
    assert sum(len(cut[p]) < len(free[p]) for p in contexts) >= 2   # the stop cut several rows


def test_book_samples_greedy_stop_at_eos_and_drop_it():
    class Fixed(torch.nn.Module):  # predicts "b" until a row holds 8 real tokens, then eos (27)
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.config = type("C", (), {"vocab_size": 28})()

        def new_cache(self, batch, max_len):
            return type("Cache", (), {"length": 0})()

        def forward(self, x, attention_mask=None, position_ids=None, cache=None, last_only=False):
            past = cache.length if cache is not None else 0
            if cache is not None:
                cache.length = past + x.shape[1]
            real = attention_mask.sum(-1) if attention_mask is not None else torch.full((x.shape[0],), past + x.shape[1])
            logits = torch.zeros(x.shape[0], 1, 28)
            logits[real >= 8, 0, 27] = 1.0
            logits[real < 8, 0, 1] = 1.0
            return logits

    class LowerTok(CharTok):
        def encode(self, text):
            return super().encode(text.lower())

    texts = book_samples(Fixed(), LowerTok(), eos_id=27)
    assert texts == {"Moscow": "moscowbb", "New York": "new york", "The hurricane": "the hurricane",
                     "The President": "the president"}
