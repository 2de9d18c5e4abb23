"""The one completion helper (lm/inference/complete.py, lm/inference/stops.py) against the code it replaced.

Each caller used to batch, generate, cut and decode on its own. The `old_*` functions below are
those bodies as they were (copied verbatim, `self` made an argument); every test runs the old body
and the caller as it is now on the same tiny GPT-2, with prompts of different lengths, stop tokens
and stop strings that really fire, and asserts the same strings (and token ids).
"""
from __future__ import annotations

import pytest
import torch

from conftest import tiny_gpt2
from lm.errors import ConfigError
from lm.finetune.sft import _context_of, fit_prompts, generate_completions
from lm.inference.complete import batches, complete, complete_ids, eval_mode
from lm.inference.generate import generate, generate_text
from lm.inference.sampling import SamplingConfig
from lm.inference.stops import cut_ids, cut_text, decode_new, first_stop
from lm.labeling.lm_generate import LMGenerator
from lm.rl.grpo import GRPOConfig, rollout
from lm.rl.objective import completion_mask
from lm.rl.tasks import Problem, build_prompt
from lm.rl.warmup import greedy_completions

LINES = ["the cat sat on the mat", "a dog ran in the park\nand then it slept", "Predict the emotion: joy 12 34",
         "numbers 1 2 3 4 5 6 7 8 9 0 <answer>7</answer>\n"]
PROMPTS = ["the cat", "a dog ran in the park and", "x", "numbers 1 2 3 and then", "joy to the world",
           "Predict the emotion: joy"]
FIRING = ["I", "X", "s", "s5", "\n"]     # texts the lively model writes, at different steps in different rows


@pytest.fixture(scope="module")
def lively():
    """tiny_gpt2 with large random position embeddings, so that greedy answers change from step to
    step and from prompt to prompt (an untrained model repeats one token), and a newline token that
    takes the place of "Z" in them (the labeller's stop string must fire)."""
    model, tok = tiny_gpt2(LINES, 256)
    g = torch.Generator().manual_seed(1)
    nl, z = tok.encode("\n")[0], tok.encode("Z")[0]
    with torch.no_grad():
        model.transformer.wpe.weight.copy_(torch.randn(model.transformer.wpe.weight.shape, generator=g))
        model.transformer.wte.weight[nl] = 1.01 * model.transformer.wte.weight[z]
    return model.eval(), tok


def ids_of(tok, prompts=PROMPTS):
    return [tok.encode(p) for p in prompts]


def token_of(tok, text):
    (t,) = tok.encode(text)
    return t


def stop_settings(tok):
    """Stop tokens and strings that fire at different steps in different rows (checked below);
    "s5" spans two tokens, <|endoftext|> never comes."""
    eot, i, x, s = tok.eot_id, token_of(tok, "I"), token_of(tok, "X"), token_of(tok, "s")
    return [dict(), dict(stop_token_ids=[eot]), dict(stop_token_ids=[i]), dict(stop_token_ids=[x, eot]),
            dict(stop_strings=["s5"]), dict(stop_strings=["X", "\n"]), dict(stop_token_ids=[eot], stop_strings=["I"]),
            dict(stop_token_ids=[x], stop_strings=["s", "\n"]), dict(stop_token_ids=[s], stop_strings=["X"])]


def test_the_stops_really_fire(lively):
    """What the settings stop at comes at different steps in different rows (or comparing the cuts
    would prove little), and every row differs."""
    model, tok = lively
    free = [tok.decode(r) for r in complete_ids(model, ids_of(tok), 16)]
    assert len(set(free)) == len(free)
    for s in FIRING:
        assert len({t.find(s) for t in free} - {-1}) >= 3, (s, free)


# ---------------------------------------------------------------------------------------------
# The old bodies
# ---------------------------------------------------------------------------------------------

def old_generate_text(model, tokenizer, prompts, max_new_tokens, **kwargs):
    ids = [tokenizer.encode(p) for p in prompts]
    kwargs.setdefault("decode", tokenizer.decode)
    out = generate(model, ids, max_new_tokens, **kwargs)
    T = max(len(i) for i in ids)
    stop_ids, stop_strings = set(kwargs.get("stop_token_ids", ())), kwargs.get("stop_strings", ())
    texts = []
    for row in out[:, T:].tolist():
        end = next((k + 1 for k, t in enumerate(row) if t in stop_ids), len(row))
        if stop_strings:
            end = next((k for k in range(1, end + 1)
                        if any(s in tokenizer.decode(row[:k]) for s in stop_strings)), end)
        texts.append(tokenizer.decode(row[:end]))
    return texts


def old_generate_completions(model, tokenizer, prompts, max_new_tokens, *, eos_id, stop_strings=(),
                             batch_size=64, overflow="truncate"):
    context = _context_of(model)
    ids = fit_prompts([list(tokenizer.encode(p)) for p in prompts],
                      context - max_new_tokens if context is not None else None, overflow)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    answers = [""] * len(ids)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            out = generate(model, [ids[i] for i in batch], max_new_tokens, stop_token_ids=[eos_id],
                           stop_strings=stop_strings, decode=tokenizer.decode if stop_strings else None,
                           pad_token_id=eos_id, vocab_limit=getattr(tokenizer, "vocab_size", None))
            T = max(len(ids[i]) for i in batch)
            for i, row in zip(batch, out[:, T:].tolist()):
                new = row[:row.index(eos_id)] if eos_id in row else row
                text = tokenizer.decode(new)
                for s in stop_strings:
                    text = text.split(s, 1)[0]
                answers[i] = text
    finally:
        model.train(was_training)
    return answers


@torch.no_grad()
def old_greedy_completions(model, tokenizer, problems, max_new_tokens, eos_id, batch_size=32):
    texts = []
    was_training = model.training
    model.eval()
    for i in range(0, len(problems), batch_size):
        prompts = [tokenizer.encode(build_prompt(p.question)) for p in problems[i:i + batch_size]]
        out = generate(model, prompts, max_new_tokens, stop_token_ids=[eos_id], pad_token_id=eos_id,
                       vocab_limit=tokenizer.vocab_size)
        T = max(len(p) for p in prompts)
        for row in out[:, T:].tolist():
            texts.append(tokenizer.decode(row[:row.index(eos_id)] if eos_id in row else row))
    model.train(was_training)
    return texts


def old_replies(self, prompts, attempt):
    out = generate(self.model, prompts, self.max_new_tokens, sampling=None if attempt == 0 else self.sampling,
                   stop_token_ids=self.stop_ids, stop_strings=["\n"], decode=self.tokenizer.decode,
                   pad_token_id=self.stop_ids[0] if self.stop_ids else None, generator=self.generator,
                   vocab_limit=self.tokenizer.vocab_size)
    T = max(len(p) for p in prompts)
    texts = []
    for row in out[:, T:].tolist():
        end = next((j for j, t in enumerate(row) if t in self.stop_ids), len(row))
        texts.append(self.tokenizer.decode(row[:end]))
    return texts


def old_rollout_texts(tokenizer, new, eos_id):
    cmask = completion_mask(new, eos_id)
    texts = []
    for row, m in zip(new.tolist(), cmask.tolist()):
        ids = row[:sum(m)]
        texts.append(tokenizer.decode(ids[:-1] if ids and ids[-1] == eos_id else ids))
    return texts


# ---------------------------------------------------------------------------------------------
# Each caller == its old body
# ---------------------------------------------------------------------------------------------

def test_generate_text_is_the_old_generate_text(lively):
    model, tok = lively
    for kw in stop_settings(tok):
        assert generate_text(model, tok, PROMPTS, 14, **kw) == old_generate_text(model, tok, PROMPTS, 14, **kw), kw
    for seed in range(3):   # sampled: the same draws
        kw = dict(sampling=SamplingConfig(temperature=0.9, top_p=0.95), stop_token_ids=[tok.eot_id])
        new = generate_text(model, tok, PROMPTS, 14, generator=torch.Generator().manual_seed(seed), **kw)
        assert new == old_generate_text(model, tok, PROMPTS, 14, generator=torch.Generator().manual_seed(seed), **kw)


def test_sft_generate_completions_is_the_old_one(lively):
    model, tok = lively
    prompts = PROMPTS + ["the cat sat", "dog"]
    i, s = token_of(tok, "I"), token_of(tok, "s")
    for eos, stops, batch_size in [(tok.eot_id, (), 64), (i, (), 3), (s, ["X"], 1), (tok.eot_id, ["s5", "\n"], 3),
                                   (i, ["5", "Z"], 64), (tok.eot_id, ["X"], 2)]:
        new = generate_completions(model, tok, prompts, 12, eos_id=eos, stop_strings=stops, batch_size=batch_size)
        old = old_generate_completions(model, tok, prompts, 12, eos_id=eos, stop_strings=stops, batch_size=batch_size)
        assert new == old, (eos, stops, batch_size)


def test_warmup_greedy_completions_is_the_old_one(lively):
    model, tok = lively
    problems = [Problem(q, "1", "") for q in ("What is 2 + 3?", "x", "the cat sat on the mat; how many cats?",
                                               "numbers 1 2 3", "a dog")]
    for eos in (tok.eot_id, token_of(tok, "I"), token_of(tok, "X")):
        for batch_size in (2, 32):
            assert (greedy_completions(model, tok, problems, 10, eos, batch_size)
                    == old_greedy_completions(model, tok, problems, 10, eos, batch_size))


def test_labeller_replies_are_the_old_ones(lively):
    model, tok = lively
    new, old = (LMGenerator(model, tok, taxonomy=None, max_new_tokens=10, seed=3) for _ in range(2))
    prompts = ids_of(tok)
    greedy = new.replies(prompts, 0)
    assert greedy == old_replies(old, prompts, 0)
    assert any(t.endswith("\n") for t in greedy)   # the newline stopped a row and stays in its reply
    for attempt in (1, 2, 1):     # sampled: both generators draw the same
        assert new.replies(prompts, attempt) == old_replies(old, prompts, attempt)
    for stop_ids in ([token_of(tok, "X"), tok.eot_id], []):
        new.stop_ids = old.stop_ids = stop_ids
        assert new.replies(prompts, 1) == old_replies(old, prompts, 1)


def test_rollout_decodes_as_before_and_draws_the_same_tokens(lively):
    model, tok = lively
    problems = [Problem(q, "1", "") for q in ("What is 2 + 3?", "x y z")]
    cfg = GRPOConfig(prompts_per_step=2, group_size=3, max_new_tokens=10, temperature=1.0)
    first = rollout(model, tok, problems, cfg, tok.eot_id, torch.Generator().manual_seed(0))
    for eos in (tok.eot_id, int(first.input_ids[0, -7])):     # never drawn; drawn in the middle of a row
        roll = rollout(model, tok, problems, cfg, eos, torch.Generator().manual_seed(0))
        rows = [tok.encode(build_prompt(p.question)) for p in problems for _ in range(cfg.group_size)]
        out = generate(model, rows, cfg.max_new_tokens, stop_token_ids=[eos], pad_token_id=eos,
                       sampling=SamplingConfig(temperature=1.0, top_p=1.0), generator=torch.Generator().manual_seed(0),
                       vocab_limit=tok.vocab_size)
        assert torch.equal(roll.input_ids, out)
        T = out.shape[1] - roll.completion_mask.shape[1]
        assert roll.completions == old_rollout_texts(tok, out[:, T:], eos)
    assert 0 < roll.completion_mask.sum(1).min() < cfg.max_new_tokens     # a row stopped early


def test_book_samples_decode_prompt_and_answer_together(lively):
    """book_samples (lm/training/pretrain.py) is complete_ids + decode(prompt + answer); its
    oracle against the old body is in tests/training/test_train.py. Here: the cut it relies on."""
    model, tok = lively
    eos = token_of(tok, "X")
    out = generate(model, ids_of(tok), 12, stop_token_ids=[eos], pad_token_id=eos)
    T = max(len(p) for p in ids_of(tok))
    old = [row[:row.index(eos)] if eos in row else row for row in out[:, T:].tolist()]
    assert complete_ids(model, ids_of(tok), 12, stop_token_ids=[eos], pad_token_id=eos) == old


# ---------------------------------------------------------------------------------------------
# The pieces
# ---------------------------------------------------------------------------------------------

def test_cuts_by_hand():
    decode = lambda ids: "".join("abcdefgh"[i] for i in ids)    # noqa: E731
    row = [0, 1, 2, 3, 4, 7, 7]                                  # "abcde" then padding (7 = "h")
    assert cut_ids(row, [3]) == [0, 1, 2] and cut_ids(row, [3], cut="tokens") == [0, 1, 2]
    assert cut_ids(row, [3], cut="after") == [0, 1, 2, 3]
    assert cut_ids(row, [], ["bc"], decode, cut="after") == [0, 1, 2]     # the token that completed "bc"
    assert cut_ids(row, [1], ["cd"], decode, cut="after") == [0, 1]       # the stop token came first
    assert cut_ids(row, [], (), decode, cut="after") == row               # never stopped: all of it
    assert cut_text("abcde", ["cd", "b"]) == "a" and cut_text("abcde", ["cd"], cut="tokens") == "abcde"
    assert cut_text("abc", ["bc", "ab"]) == ""                            # the earliest stop string wins
    assert first_stop("abcabc", ["c"], start=3) == 5 and first_stop("abc", ["x"]) is None
    assert decode_new(type("T", (), {"decode": staticmethod(decode)})(), [row, [4, 0]], [3], ["b"]) == ["a", "ea"]
    with pytest.raises(ConfigError, match="cut must be one of"):
        cut_ids(row, cut="inside")
    with pytest.raises(ConfigError, match="decode"):
        cut_ids(row, [], ["x"], cut="after")


def test_batches_keep_order_or_go_longest_first():
    assert batches(5, 2) == [[0, 1], [2, 3], [4]] and batches(0) == [] and batches(3) == [[0, 1, 2]]
    assert batches(4, 3, lengths=[1, 3, 2, 3]) == [[1, 3, 2], [0]]
    with pytest.raises(ConfigError, match="batch_size"):
        batches(3, 0)


def test_answers_come_back_in_prompt_order_whatever_the_batches(lively):
    model, tok = lively
    one_by_one = [complete(model, tok, [p], 12, stop_token_ids=[tok.eot_id])[0] for p in ids_of(tok)]
    for kw in (dict(), dict(batch_size=2), dict(batch_size=2, longest_first=True)):
        assert complete(model, tok, ids_of(tok), 12, stop_token_ids=[tok.eot_id], **kw) == one_by_one


def test_eval_mode_switches_dropout_off_and_restores_the_mode(lively):
    model, tok = lively
    with eval_mode(model.train()) as m:
        assert m is model and not model.training
    assert model.training
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("boom")
    assert model.training
    # a model left in training mode (dropout 0.1) answers as in eval mode, and stays in training mode
    answers = complete(model, tok, ids_of(tok), 12)
    assert model.training and answers == complete(model.eval(), tok, ids_of(tok), 12)
