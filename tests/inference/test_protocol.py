"""The generation protocol (lm/inference/protocol.py), the KV cache that advances itself
(lm/models/cache.py) and the mask helpers every attention model shares (lm/models/masks.py)."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch

from lm.errors import ConfigError
from lm.inference.protocol import Cache, GenerationModel
from lm.models import cache as cache_module
from lm.models import masks, transformer
from lm.models.cache import KVCache
from lm.models.gpt2 import GPT2, GPT2Config, GPT2ForSequenceClassification
from lm.models.masks import causal_mask, check_mask_and_positions, last_token_index, positions_from_mask
from lm.models.qwen2 import Qwen2, Qwen2Config
from lm.models.rnn import RecurrentLanguageModel, RNNConfig
from lm.models.transformer import DecoderConfig, DecoderLanguageModel

MODELS = {
    "rnn": lambda: RecurrentLanguageModel(RNNConfig(vocab_size=61, emb_dim=16, num_layers=2)),
    "decoder": lambda: DecoderLanguageModel(DecoderConfig(vocab_size=61, emb_dim=16, num_heads=2, num_blocks=3)),
    "gpt2": lambda: GPT2(GPT2Config(vocab_size=61, n_positions=32, n_embd=16, n_layer=3, n_head=2)),
    "qwen2": lambda: Qwen2(Qwen2Config(vocab_size=61, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                                       num_attention_heads=4, num_key_value_heads=2)),
}


def model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return MODELS[kind]().eval()


# --------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", MODELS)
def test_every_language_model_speaks_the_protocol(kind):
    m = model(kind)
    assert isinstance(m, GenerationModel)
    cache = m.new_cache(2, 10)
    assert isinstance(cache, Cache) and cache.length == 0
    want = inspect.signature(GenerationModel.forward).parameters
    got = inspect.signature(type(m).forward).parameters
    assert [(p.name, p.default) for p in got.values()] == [(p.name, p.default) for p in want.values()]


@pytest.mark.parametrize("kind", MODELS)
def test_last_only_gives_the_last_positions_logits(kind):
    m = model(kind)
    ids = torch.randint(0, 61, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7])
    with torch.no_grad():
        for attention_mask in (None, mask):
            full = m(ids, attention_mask=attention_mask)                       # (B, T, V)
            last = m(ids, attention_mask=attention_mask, last_only=True)       # (B, 1, V)
            assert full.shape == (2, 7, 61) and last.shape == (2, 1, 61)
            torch.testing.assert_close(last, full[:, -1:], atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", MODELS)
def test_a_forward_pass_advances_the_cache_by_its_tokens(kind):
    m = model(kind)
    ids = torch.randint(0, 61, (2, 9), generator=torch.Generator().manual_seed(2))
    cache = m.new_cache(2, 9)
    with torch.no_grad():
        lengths = [(m(ids[:, :5], cache=cache), cache.length)[1]]
        lengths += [(m(ids[:, t:t + 1], cache=cache), cache.length)[1] for t in range(5, 9)]
    assert lengths == [5, 6, 7, 8, 9]


def test_no_model_file_writes_the_cache_length():
    """The cache advances itself: `length` is assigned only in the caches' own classes."""
    writes = []
    for path in sorted(Path(transformer.__file__).parent.glob("*.py")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"\w\.length\s*=(?!=)|\.length\s*\+=", line):
                writes.append((path.name, n, line.strip()))
    assert {w[0] for w in writes} == {"cache.py", "rnn.py"} and len(writes) == 4    # each: __init__, update
    assert all(w[2].startswith(("self.length", "self.h, self.length")) for w in writes), writes


# --------------------------------------------------------------------------------------------
# The KV cache
# --------------------------------------------------------------------------------------------

def kv(T: int, value: float) -> torch.Tensor:
    return torch.full((1, 2, T, 3), value)                                     # (B, H, T, D)


def test_kv_cache_advances_after_its_last_layer():
    cache = KVCache(n_layer=3, batch=1, n_heads=2, max_len=6, head_dim=3, dtype=torch.float32, device="cpu")
    seen = []
    for layer in range(3):
        k, v = cache.update(layer, kv(4, layer + 1), kv(4, -layer - 1))
        seen.append((cache.length, tuple(k.shape)))
    assert seen == [(0, (1, 2, 4, 3)), (0, (1, 2, 4, 3)), (4, (1, 2, 4, 3))]   # every layer saw past = 0
    k, v = cache.update(0, kv(2, 9), kv(2, -9))                                # the next pass, layer 0
    assert cache.length == 4 and k.shape == (1, 2, 6, 3)
    assert k[0, 0, :, 0].tolist() == [1, 1, 1, 1, 9, 9] and v[0, 0, :, 0].tolist() == [-1, -1, -1, -1, -9, -9]


def test_kv_cache_refuses_more_than_it_holds_and_stays_as_it_was():
    cache = KVCache(n_layer=1, batch=1, n_heads=2, max_len=4, head_dim=3, dtype=torch.float32, device="cpu")
    cache.update(0, kv(3, 1.0), kv(3, 1.0))
    with pytest.raises(ConfigError, match="holds 4 positions; cannot add 2 after 3"):
        cache.update(0, kv(2, 5.0), kv(2, 5.0))
    assert cache.length == 3 and float(cache.k[..., 3, :].abs().sum()) == 0.0


def test_the_old_import_paths_still_work():
    assert transformer.KVCache is cache_module.KVCache
    for name in ("causal_mask", "positions_from_mask", "check_mask_and_positions", "last_token_index"):
        assert getattr(transformer, name) is getattr(masks, name)


# --------------------------------------------------------------------------------------------
# The mask helpers, by hand
# --------------------------------------------------------------------------------------------

def test_causal_mask_is_none_where_plain_causal_attention_does():
    assert causal_mask(None, 0, 5, "cpu") is None                              # a prompt, no padding
    assert causal_mask(None, 7, 1, "cpu") is None                              # one new token sees all


def test_causal_mask_after_a_cache_without_padding():
    got = causal_mask(None, 2, 2, "cpu")                                       # queries at positions 2, 3
    assert got.shape == (1, 1, 2, 4)
    assert got[0, 0].int().tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]


def test_causal_mask_hides_padding_and_a_padding_query_sees_itself():
    pad = torch.tensor([[0, 1, 1], [1, 1, 1]])
    got = causal_mask(pad, 0, 3, "cpu")
    assert got.shape == (2, 1, 3, 3)
    assert got[0, 0].int().tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert got[1, 0].int().tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]


def test_positions_count_real_tokens_from_the_first_one():
    assert positions_from_mask(torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])).tolist() == [[0, 0, 0, 1, 2],
                                                                                            [0, 1, 2, 3, 4]]


def test_check_mask_and_positions():
    ids = torch.zeros(2, 2, dtype=torch.long)
    mask, pos = check_mask_and_positions(ids, torch.ones(2, 5, dtype=torch.long), None, 3)
    assert mask is None and pos.tolist() == [[3, 4]]                           # hides nothing: dropped
    padded = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    mask, pos = check_mask_and_positions(ids, padded, None, 3)
    assert mask is padded and pos.tolist() == [[1, 2], [3, 4]]
    given = torch.tensor([[7, 8]])
    assert check_mask_and_positions(ids, None, given, 0)[1] is given
    with pytest.raises(ConfigError, match=r"attention_mask has shape \(2, 2\), expected \(2, 5\)"):
        check_mask_and_positions(ids, torch.ones(2, 2), None, 3)
    with pytest.raises(ConfigError, match="input_ids must have shape"):
        check_mask_and_positions(torch.zeros(2, 2, 2, dtype=torch.long), None, None, 0)


def test_last_token_index():
    ids = torch.tensor([[5, 6, 0, 0], [5, 6, 7, 8], [0, 0, 0, 0]])
    assert last_token_index(ids).tolist() == [3, 3, 3]                          # nothing says: the last column
    assert last_token_index(ids, pad_token_id=0).tolist() == [1, 3, 0]         # all padding: column 0
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert last_token_index(ids, mask, pad_token_id=0).tolist() == [2, 0, 0]   # the mask wins


# --------------------------------------------------------------------------------------------
# GPT-2 on the shared helpers
# --------------------------------------------------------------------------------------------

def test_gpt2_classifier_reads_where_its_inline_code_read():
    """The old inline reading position (rightmost mask-1, else rightmost non-pad, else the last
    column), written out here, gives the same logits as the shared `last_token_index`."""
    torch.manual_seed(0)
    cls = GPT2ForSequenceClassification(GPT2Config(vocab_size=61, n_positions=16, n_embd=16, n_layer=2,
                                                   n_head=2, pad_token_id=0, num_labels=3)).eval()
    ids = torch.tensor([[5, 6, 0, 0, 0], [5, 6, 7, 8, 9], [3, 0, 4, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    with torch.no_grad():
        for attention_mask, pad in ((mask, 0), (None, 0), (None, None)):
            cls.config.pad_token_id = pad
            h = cls.transformer(ids, attention_mask)                             # (B, T, C)
            real = (attention_mask.bool() if attention_mask is not None else ids != pad if pad is not None
                    else torch.ones_like(ids, dtype=torch.bool))
            last = torch.where(real, torch.arange(5), -1).max(dim=-1).values.clamp(min=0)
            assert torch.equal(cls(ids, attention_mask), cls.score(h[torch.arange(3), last]))


def test_gpt2_refuses_what_it_refused():
    m = model("gpt2")
    with pytest.raises(ConfigError, match="sequence of 33 tokens is longer than n_positions=32"):
        m(torch.zeros(1, 33, dtype=torch.long))
    cache = m.new_cache(1, 40)
    m(torch.zeros(1, 30, dtype=torch.long), cache=cache)
    with pytest.raises(ConfigError, match="sequence of 33 tokens is longer than n_positions=32"):
        m(torch.zeros(1, 3, dtype=torch.long), cache=cache)
    with pytest.raises(ConfigError, match=r"attention_mask has shape \(1, 3\), expected \(1, 32\) "
                                          r"\(it covers cached and new positions\)"):
        m(torch.zeros(1, 2, dtype=torch.long), attention_mask=torch.ones(1, 3), cache=cache)
    with pytest.raises(ConfigError, match="input_ids must have shape"):
        m(torch.zeros(1, 2, 2, dtype=torch.long))
