"""Generation, the one path of every LM: the reference greedy continuation, and for the chapter 3 RNN,
the chapter 4 decoder and GPT-2 alike: cache == no cache, batched left-padded == one by one; stops, streaming."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import SHARED_FIXTURES, needs_fixtures
from lm.errors import ConfigError
from lm.inference.generate import generate, generate_text, left_pad
from lm.inference.sampling import SamplingConfig
from lm.models.gpt2 import GPT2, GPT2Config
from lm.models.rnn import RecurrentLanguageModel, RNNConfig
from lm.models.transformer import DecoderConfig, DecoderLanguageModel

KINDS = ["gpt2", "decoder", "rnn"]


def lively_model(seed: int = 0, kind: str = "gpt2") -> torch.nn.Module:
    """A random model with large weights, so greedy continuations vary instead of repeating one token."""
    torch.manual_seed(seed)
    if kind == "gpt2":
        model = GPT2(GPT2Config(vocab_size=61, n_positions=48, n_embd=32, n_layer=2, n_head=4, eos_token_id=60))
        std = 0.35
    elif kind == "decoder":
        model, std = DecoderLanguageModel(DecoderConfig(vocab_size=61, emb_dim=32, num_heads=4, num_blocks=2)), 0.3
    else:
        model, std = RecurrentLanguageModel(RNNConfig(vocab_size=61, emb_dim=32, num_layers=2)), 0.5
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, std)
    return model.eval()


PROMPTS = [[1, 2, 3, 4, 5], [7, 8], [9, 10, 11, 12, 13, 14, 15], [20]]


@needs_fixtures
def test_greedy_matches_reference_continuation():
    folder = SHARED_FIXTURES / "gpt2_lm_safetensors"
    ref = json.loads((folder / "greedy.json").read_text())
    model = GPT2.from_pretrained(folder)
    out = generate(model, torch.tensor(ref["prompt"]), 20)
    assert out.tolist() == ref["greedy_20"]


@pytest.mark.parametrize("kind", KINDS)
def test_cached_equals_uncached_greedy(kind):
    model = lively_model(0, kind)
    a = generate(model, PROMPTS, 25)
    b = generate(model, PROMPTS, 25, use_cache=False)
    assert torch.equal(a, b)
    assert len(set(a[0, 7:].tolist())) > 3                     # the continuation is not one repeated token


@pytest.mark.parametrize("kind", KINDS)
def test_cached_logits_equal_full_forward(kind):
    """Feeding tokens one at a time through the cache gives the full forward pass's logits."""
    model = lively_model(0, kind)
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.no_grad():
        full = model(ids)                                       # (1, 8, V)
        cache = model.new_cache(1, 8)
        first = model(ids[:, :3], cache=cache)                  # prefill 3 tokens
        steps = [model(ids[:, t:t + 1], cache=cache) for t in range(3, 8)]
    assert cache.length == 8
    scale = float(full.abs().max())                             # float32 rounding, relative to the logits' size
    torch.testing.assert_close(torch.cat([first] + steps, dim=1), full, atol=1e-6 * scale, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_left_padded_forward_equals_unpadded(kind):
    """A left-padded row with its mask gives the unpadded row's logits on its real tokens."""
    model = lively_model(2, kind)
    real = torch.tensor([[5, 6, 7, 8, 9]])
    padded = torch.cat([torch.full((1, 3), 11), real], dim=1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        want = model(real)
        torch.testing.assert_close(model(padded, attention_mask=mask)[:, 3:], want,
                                   atol=1e-6 * float(want.abs().max()), rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_batched_left_padded_equals_one_by_one(kind):
    model = lively_model(1, kind)
    batched = generate(model, PROMPTS, 20)
    T = max(len(p) for p in PROMPTS)
    for i, p in enumerate(PROMPTS):
        alone = generate(model, [p], 20)
        assert batched[i, T:].tolist() == alone[0, len(p):].tolist()
        assert batched[i, T - len(p):T].tolist() == p


@pytest.mark.parametrize("kind", KINDS)
def test_batched_sampling_equals_one_by_one_distribution(kind):
    """With the same generator seed, cached sampling draws what uncached sampling draws."""
    model = lively_model(0, kind)
    cfg = SamplingConfig(temperature=0.9, top_k=20, top_p=0.95, repetition_penalty=1.3)
    g = torch.Generator().manual_seed(0)
    a = generate(model, [[1, 2, 3]], 12, sampling=cfg, generator=g)
    g = torch.Generator().manual_seed(0)
    b = generate(model, [[1, 2, 3]], 12, sampling=cfg, generator=g, use_cache=False)
    assert torch.equal(a, b)


def test_stop_tokens_stop_strings_and_streaming():
    model = lively_model()
    free = generate(model, [PROMPTS[0]], 20)[0, 5:].tolist()
    stop = free[4]
    first = free.index(stop)
    streamed = []
    out = generate(model, [PROMPTS[0]], 20, stop_token_ids=[stop], on_token=lambda t: streamed.append(t.tolist()))
    assert out[0, 5:].tolist() == free[:first + 1]            # stops right after the stop token
    assert [s[0] for s in streamed] == free[:first + 1]

    decode = lambda ids: "".join(chr(97 + i % 26) for i in ids)   # a toy decoder
    target = decode(free[2:4])
    out = generate(model, [PROMPTS[0]], 20, stop_strings=[target], decode=decode)
    assert decode(out[0, 5:].tolist()).endswith(target) and out.size(1) <= 5 + 4


def test_finished_rows_are_padded():
    model = lively_model()
    free = generate(model, PROMPTS[:2], 10)
    stop = free[0, 5 + 1].item()                               # row 0 stops at its 2nd new token (prompts padded to 5)
    out = generate(model, PROMPTS[:2], 10, stop_token_ids=[stop], pad_token_id=0)
    row0 = out[0, 5:].tolist()
    k = row0.index(stop)
    assert all(t == 0 for t in row0[k + 1:])


def test_left_pad_and_input_checks():
    ids, mask = left_pad([[1, 2, 3], [4]], pad_token_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    model = lively_model()
    with pytest.raises(ConfigError, match="left-padded"):
        generate(model, torch.tensor([[1, 2, 0]]), 3, attention_mask=torch.tensor([[1, 1, 0]]))
    with pytest.raises(ConfigError, match="n_positions=48"):
        generate(model, [[1, 2]], 47)
    with pytest.raises(ConfigError, match="decode"):
        generate(model, [[1, 2]], 3, stop_strings=["x"])
    with pytest.raises(ConfigError, match="at least one token"):
        generate(model, [[]], 3)


def test_generate_text_cuts_at_stop():
    class CharTok:
        def encode(self, s):
            return [ord(c) - 97 for c in s]

        def decode(self, ids):
            return "".join(chr(97 + i % 26) for i in ids)
    model = lively_model()
    tok = CharTok()
    full = generate_text(model, tok, ["abc", "d"], 12)
    stop = full[1][3]
    cut = generate_text(model, tok, ["abc", "d"], 12, stop_strings=[stop])
    assert cut[1] == full[1][:full[1].index(stop) + 1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    """On a GPU: same logits as the CPU (fp32, TF32 off), cached == uncached, batched == one by one."""
    torch.backends.cuda.matmul.allow_tf32 = False
    cpu = lively_model()
    gpu = lively_model().cuda()
    ids, mask = left_pad(PROMPTS, 0)
    with torch.no_grad():
        torch.testing.assert_close(gpu(ids.cuda(), attention_mask=mask.cuda()).cpu(),
                                   cpu(ids, attention_mask=mask), atol=1e-4, rtol=1e-4)
    a = generate(gpu, PROMPTS, 20)
    assert a.is_cuda and torch.equal(a, generate(gpu, PROMPTS, 20, use_cache=False))
    T = max(len(p) for p in PROMPTS)
    for i, p in enumerate(PROMPTS):
        assert a[i, T:].tolist() == generate(gpu, [p], 20)[0, len(p):].tolist()
    cfg = SamplingConfig(temperature=0.9, top_k=20, top_p=0.9, repetition_penalty=1.2)
    s = generate(gpu, PROMPTS, 10, sampling=cfg, generator=torch.Generator("cuda").manual_seed(0))
    assert s.shape == (len(PROMPTS), T + 10)


def test_vocab_limit_is_never_exceeded():
    """A tokenizer smaller than the model's embedding: ids at or above the limit are never drawn."""
    model = lively_model()
    free = generate(model, PROMPTS, 15)
    assert free[:, 7:].max() >= 40                                    # unconstrained, large ids appear
    limited = generate(model, PROMPTS, 15, vocab_limit=40)
    assert limited[:, 7:].max() < 40
    cfg = SamplingConfig(temperature=1.5)
    sampled = generate(model, PROMPTS, 15, sampling=cfg, vocab_limit=10, generator=torch.Generator().manual_seed(0))
    assert sampled[:, 7:].max() < 10
