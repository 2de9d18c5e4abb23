"""SFT (5.3): masking by position, the reference library's gradients, truncation, generation, exact match."""
import json
import warnings
from types import SimpleNamespace

import pytest
import torch

from conftest import SHARED_FIXTURES, needs_fixtures
from lm.checkpoints.hf import gpt2_to_hf
from lm.checkpoints.safetensors import load_safetensors
from lm.errors import ConfigError
from lm.finetune import sft
from lm.finetune.sft import (CHATML_TEMPLATE, IM_END, SFTExamples, emotion_pair, exact_match, fit_pair,
                             generate_completions, instruct_pair, normalize)
from lm.inference import complete
from lm.inference.generate import generate
from lm.models.gpt2 import GPT2, GPT2Config
from lm.training.engine import TrainConfig, lm_loss, train

STEP = SHARED_FIXTURES / "gpt2_sft_step"


class CharTokenizer:
    """One token per character (ids 1..127); id 0 is the pad, 127 the EOS."""
    eos = 127

    def encode(self, text):
        return [min(ord(c), 126) for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids if 0 < i < 127)


def tiny(seed=0, n_positions=64):
    torch.manual_seed(seed)
    return GPT2(GPT2Config(vocab_size=128, n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
                           embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0))


def test_labels_are_decided_by_position_not_by_pad_id():
    tok = CharTokenizer()
    ex = SFTExamples([("ab", "c"), ("abcd", "\x00x")], tok, eos_id=tok.eos, pad_id=0)
    # second completion starts with id 0 == the pad id: still a target
    b = ex.collate([0, 1])
    assert b["input_ids"].tolist() == [[97, 98, 99, 0, 0, 0], [97, 98, 99, 100, 0, 120]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]]
    assert b["targets"].tolist() == [[-100, 99, 127, -100, -100, -100], [-100, -100, -100, 0, 120, 127]]


def test_dynamic_length_and_train_on_prompt():
    ex = SFTExamples.from_token_ids([[5, 6, 7], [5, 6, 7, 8, 9]], [1, 2], pad_id=3)
    assert ex.collate([0])["input_ids"].shape == (1, 2)       # padded to the batch's longest only
    assert ex.collate([0, 1])["input_ids"].shape == (2, 4)
    both = SFTExamples.from_token_ids([[5, 6, 7, 8, 9]], [3], pad_id=0, train_on_prompt=True)
    assert both.collate([0])["targets"].tolist() == [[6, 7, 8, 9]]


@needs_fixtures
@pytest.mark.parametrize("loss_fn", [lm_loss, sft.completion_loss])
def test_reference_loss_and_every_gradient(loss_fn):
    """The engine's loss and the completion-only one (emotion training) both give the reference's."""
    fx = json.loads((STEP / "fixture.json").read_text())
    # rebuild the examples from the fixture: real tokens (mask) and prompt length (leading -100s)
    seqs, prompts = [], []
    for ids, mask, labels in zip(fx["input_ids"], fx["attention_mask"], fx["labels"]):
        seqs.append(ids[:sum(mask)])
        prompts.append(next(i for i, x in enumerate(labels) if x != -100))
    ex = SFTExamples.from_token_ids(seqs, prompts, pad_id=0)
    batch = ex.collate([0, 1, 2])
    # our targets are the reference labels shifted by one (position t predicts t + 1)
    shifted = [row[1:] for row in fx["labels"]]
    assert batch["targets"].tolist() == shifted
    assert batch["targets"][0, -1] == 0                        # the completion token equal to the pad id
    reference = load_safetensors(STEP / "grads.safetensors")
    model = GPT2.from_pretrained(SHARED_FIXTURES / "gpt2_lm_safetensors").train()
    loss, n = loss_fn(model, batch)                            # as training uses it
    assert n == sum(x != -100 for row in shifted for x in row)
    assert abs(loss.item() - fx["loss"]) < 1e-5
    loss.backward()
    grads = gpt2_to_hf({k: p.grad for k, p in model.named_parameters()})
    assert sorted(grads) == sorted(reference)                  # wte's gradient includes the tied head's
    for k, g in reference.items():
        assert (grads[k] - g).abs().max() < 1e-5, k


def test_completion_loss_is_lm_loss_with_the_output_layer_only_where_trained():
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=2, n_head=2, embd_pdrop=0.0,
                            attn_pdrop=0.0, resid_pdrop=0.0, tie_word_embeddings=False))
    ex = SFTExamples.from_token_ids([[1, 2, 3, 4, 5], [6, 7, 8], [9, 10, 11, 12, 13, 14]], [3, 1, 4], pad_id=0)
    batch = ex.collate([0, 1, 2])
    values, grads = [], []
    for fn in (lm_loss, sft.completion_loss):
        loss, n = fn(model, batch)
        values.append((loss.item(), n))
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
    assert values[0][1] == values[1][1] == 2 + 2 + 2
    assert abs(values[0][0] - values[1][0]) < 1e-6
    for a, b in zip(*grads):
        assert (a - b).abs().max() < 1e-6


def test_fit_pair_cuts_prompt_left_then_completion_right():
    assert fit_pair([1, 2, 3], [4], 10) == ([1, 2, 3], [4], False)
    assert fit_pair([1, 2, 3, 4, 5, 6], [7, 8], 5) == ([4, 5, 6], [7, 8], True)
    assert fit_pair([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12], 6) == ([4, 5, 6], [7, 8, 9], True)
    assert fit_pair([1, 2], [3, 4, 5, 6, 7, 8], 6) == ([1, 2], [3, 4, 5, 6], True)


def test_over_long_examples_warn_once_or_raise():
    tok = CharTokenizer()
    pairs = [("x" * 40, "yes"), ("short", "no")]
    with pytest.warns(UserWarning, match="1 of 2 SFT examples are longer than the model's context"):
        ex = SFTExamples(pairs, tok, eos_id=tok.eos, context=16)
    assert len(ex.seqs[0]) == 17 and ex.seqs[0][-4:].tolist() == [121, 101, 115, 127]   # "yes" + EOS kept
    assert ex.prompt_lengths[0] == 13 and ex.truncated == 1
    with pytest.raises(ConfigError, match="example 0: 44 tokens do not fit the model's context of 16"):
        SFTExamples(pairs, tok, eos_id=tok.eos, context=16, overflow="error")


def test_bad_examples_are_clear_errors():
    tok = CharTokenizer()
    with pytest.raises(ConfigError, match="emotion text is empty"):
        emotion_pair("   ", "joy")
    with pytest.raises(ConfigError, match="example 0: the prompt encodes to no tokens"):
        SFTExamples([("", "x")], tok, eos_id=tok.eos)
    with pytest.raises(ConfigError, match="needs >= 1 prompt token"):
        SFTExamples.from_token_ids([[1, 2]], [2], pad_id=0)


def test_templates_are_the_books():
    p = emotion_pair("i feel great", " joy ")
    assert p.prompt == "Predict the emotion for the following text: i feel great\nEmotion:" and p.completion == "joy"
    q = instruct_pair("Say hi.", "hi")
    assert q.prompt.endswith("<|im_start|>user\nSay hi.\n<|im_end|>\n<|im_start|>assistant")
    assert q.prompt.startswith("<|im_start|>system\nYou are a helpful assistant.\n<|im_end|>\n")
    assert q.completion == "hi\n<|im_end|>" and q.prompt == CHATML_TEMPLATE.format(instruction="Say hi.")


def test_normalize_and_exact_match():
    assert normalize("  Joy\n\tAND   me  ") == "joy and me"
    assert exact_match(["Joy ", "fear", "x"], ["joy", "sadness", " X"]) == pytest.approx(2 / 3)
    with pytest.raises(ConfigError):
        exact_match(["a"], [])


def test_sft_learns_a_mapping_and_generation_is_batched_and_cut(tmp_path):
    tok = CharTokenizer()
    pairs = [(f"{w}=", w[::-1]) for w in ["abc", "hello", "xy", "moon", "tree", "sun"]] * 20
    model = tiny()
    ex = SFTExamples(pairs, tok, eos_id=tok.eos, pad_id=0)
    cfg = TrainConfig(lr=5e-3, batch_size=12, max_steps=150, warmup_steps=10, schedule="cosine")
    m = train(model, ex, None, cfg, tmp_path)
    assert m["train_loss"] < 0.2
    prompts = ["abc=", "hello=", "xy=", "moon="]
    out = generate_completions(model, tok, prompts, 8, eos_id=tok.eos, batch_size=3)
    assert out == ["cba", "olleh", "yx", "noom"]
    # one at a time, straight through generate(): the same answers
    for p, a in zip(prompts, out):
        ids = generate(model.eval(), [tok.encode(p)], 8, stop_token_ids=[tok.eos])[0, len(p):].tolist()
        assert tok.decode(ids[:ids.index(tok.eos)]) == a
    # a stop string ends the answer and is not part of it
    assert generate_completions(model, tok, ["hello="], 8, eos_id=tok.eos, stop_strings=["le"]) == ["ol"]


def test_generation_cuts_long_prompts_from_the_left():
    tok = CharTokenizer()
    model = tiny(n_positions=16).eval()
    with pytest.warns(UserWarning, match="1 of 2 prompts are longer than the 12 tokens"):
        out = generate_completions(model, tok, ["a" * 30, "b"], 4, eos_id=tok.eos)
    assert len(out) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ConfigError, match="longer than the 12 tokens"):
            generate_completions(model, tok, ["a" * 30], 4, eos_id=tok.eos, overflow="error")
    with pytest.raises(ConfigError, match="leaves no room for a prompt"):
        generate_completions(model, tok, ["a"], 16, eos_id=tok.eos)


def test_generation_cut_keeps_the_end_of_the_question_and_the_emotion_cue(monkeypatch):
    """An over-long emotion prompt loses its beginning: the model still sees the end of the text
    and "Emotion:", the tokens its answer follows (cut from the right, it would see neither)."""
    tok = CharTokenizer()
    model = tiny(n_positions=48).eval()
    prompt = emotion_pair("at first " + "nothing much happened, " * 4 + "then I felt so happy today", "joy").prompt
    seen = []

    def recording_generate(model, prompts, *args, **kwargs):
        seen.extend(prompts)
        return generate(model, prompts, *args, **kwargs)
    monkeypatch.setattr(complete, "generate", recording_generate)   # the helper SFT evaluation goes through
    with pytest.warns(UserWarning, match="1 of 2 prompts are longer than the 44 tokens"):
        generate_completions(model, tok, [prompt, "short"], 4, eos_id=tok.eos)
    assert len(prompt) > 44 and sorted(tok.decode(p) for p in seen) == sorted([prompt[-44:], "short"])
    kept = next(tok.decode(p) for p in seen if len(p) == 44)
    assert kept.endswith("then I felt so happy today\nEmotion:")


class ScriptedLM(torch.nn.Module):
    """Writes a fixed answer after each known prompt (the generation protocol, nothing learned):
    an oracle for how answers are cut at EOS and stop strings, in a batch sorted by length."""

    def __init__(self, tok, answers: dict):
        super().__init__()
        self.answers = {tuple(tok.encode(p)): a if isinstance(a, list) else tok.encode(a) for p, a in answers.items()}
        self.config = SimpleNamespace(vocab_size=128, n_positions=None, pad_token_id=0, eos_token_id=127)
        self.anchor = torch.nn.Parameter(torch.zeros(1))      # gives generate() a device

    def new_cache(self, batch, max_len):
        return SimpleNamespace(length=0)

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, last_only=False):
        if cache.length == 0:                                    # the prompts: remember each row's script
            mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
            self.rows = [self.answers[tuple(r[m.bool()].tolist())] for r, m in zip(input_ids, mask)]
            self.prompt_len = input_ids.shape[1]
        cache.length += input_ids.shape[1]
        step = cache.length - self.prompt_len
        logits = torch.full((input_ids.shape[0], 1, 128), -1e9)
        for i, script in enumerate(self.rows):
            logits[i, 0, script[step] if step < len(script) else 127] = 0.0
        return logits


def test_answers_stop_at_im_end_and_eos_in_prompt_order():
    tok = CharTokenizer()
    p1, p2, p3 = (instruct_pair(q, "").prompt for q in ("2+2?", "Say hello, please?", "x"))
    model = ScriptedLM(tok, {p1: "4\n<|im_end|>\nmore", p2: "Hello\n<|im_end|>", p3: [97, 98, 99, tok.eos, 122]})
    answers = generate_completions(model, tok, [p1, p2, p3], 20, eos_id=tok.eos, stop_strings=[IM_END],
                                   batch_size=2)
    assert answers == ["4\n", "Hello\n", "abc"]                # cut before <|im_end|>, or at EOS
    assert exact_match(answers, ["4", "hello", "ABC "]) == 1.0
