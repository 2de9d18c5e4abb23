"""Untrusted folders II: each case issue 25 lists, on a copy of the reference fixtures. Each ends in
one error naming the file, the field and the bad value before anything is built, or loads as the
reference library loads it (checked against its outputs)."""
from __future__ import annotations

import json
import math
import re
import shutil
import struct

import numpy as np
import pytest
import torch

from conftest import SHARED_FIXTURES, needs_fixtures
from lm.checkpoints.checks import check_fits_memory, physical_memory
from lm.checkpoints.safetensors import load_safetensors, save_safetensors
from lm.errors import CheckpointError, ConfigError, TokenizerFileError
from lm.finetune.classifier import ClassificationExamples, labels_of
from lm.finetune.lora import LoRAConfig, add_lora, load_adapter, lora_layers
from lm.models import qwen2 as qwen2_module
from lm.models.auto import load_causal_lm
from lm.models.gpt2 import GPT2, GPT2Config, GPT2ForSequenceClassification
from lm.models.qwen2 import Qwen2, Qwen2Config
from lm.tokenizers.chat import QWEN25_SYSTEM, check_template, default_system_from_dir, default_system_from_template
from lm.tokenizers.hf_json import tokenizer_from_dir

pytestmark = needs_fixtures
TOK = SHARED_FIXTURES / "qwen2_tokenizer"


def copy_folder(name: str, dst, files=None):
    """A writable copy of a fixture folder (the fixtures are read-only)."""
    src = SHARED_FIXTURES / name
    dst.mkdir(exist_ok=True)
    for f in files or [p.name for p in src.iterdir()]:
        shutil.copyfile(src / f, dst / f)
    return dst


def edit_json(path, change) -> None:
    d = json.loads(path.read_text(encoding="utf-8"))
    change(d)
    path.write_text(json.dumps(d, allow_nan=True), encoding="utf-8")


def setter(**values):
    def change(d):
        for k, v in values.items():
            if v is DELETE:
                d.pop(k, None)
            else:
                d[k] = v
    return change


DELETE = object()


def refused(exc_type, call, path, *fragments):
    """`call()` raises `exc_type` naming `path` and every fragment (the field, the value)."""
    with pytest.raises(exc_type) as e:
        call()
    assert str(path) in str(e.value), str(e.value)
    for f in fragments:
        assert f in str(e.value), (f, str(e.value))
    return e.value


@pytest.fixture
def qwen2_folder(tmp_path):
    return copy_folder("qwen2_lm_untied", tmp_path / "qwen2")


@pytest.fixture
def never_built(monkeypatch):
    """Fails the test if a Qwen2 or GPT-2 model (even shapes only) is built."""
    def boom(*a, **k):
        raise AssertionError("a model was built before the config was checked")
    monkeypatch.setattr(qwen2_module.Qwen2Model, "__init__", boom)
    monkeypatch.setattr("lm.models.gpt2.GPT2Model.__init__", boom)


# --------------------------------------------------------------------------------------------
# config.json of a Qwen2 folder
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [["qwen2"], {"name": "qwen2"}, 2])
def test_model_type_of_the_wrong_type(qwen2_folder, value, never_built):
    edit_json(qwen2_folder / "config.json", setter(model_type=value))
    refused(CheckpointError, lambda: load_causal_lm(qwen2_folder), qwen2_folder / "config.json", "model_type",
            repr(value))


@pytest.mark.parametrize("value, fragment", [
    ("full_attention", "layer_types must be null or a list of strings"),
    (5, "layer_types must be null or a list of strings"),
    ([1, 2], "layer_types must be null or a list of strings"),
    ([{"a": 1}, "full_attention"], "layer_types must be null or a list of strings"),
    (["full_attention"], "layer_types lists 1 layers but num_hidden_layers is 2"),
    (["full_attention", "sliding_attention"], "only full_attention"),
])
def test_layer_types_of_the_wrong_type_or_length(qwen2_folder, value, fragment, never_built):
    edit_json(qwen2_folder / "config.json", setter(layer_types=value))
    refused(CheckpointError, lambda: Qwen2.from_pretrained(qwen2_folder), qwen2_folder / "config.json", fragment)


@pytest.mark.parametrize("value", [16.0, "16", True, 0, -16])
def test_head_dim_must_be_a_positive_integer(qwen2_folder, value, never_built):
    edit_json(qwen2_folder / "config.json", setter(head_dim=value))
    refused(CheckpointError, lambda: Qwen2.from_pretrained(qwen2_folder), qwen2_folder / "config.json", "head_dim",
            repr(value))


def test_head_dim_as_an_integer_loads_as_before(qwen2_folder):
    edit_json(qwen2_folder / "config.json", setter(head_dim=16))            # hidden 64 / 4 heads: the same
    assert Qwen2.from_pretrained(qwen2_folder).config.head_size == 16


@pytest.mark.parametrize("field, value", [("hidden_size", 2**40), ("vocab_size", 10**12),
                                          ("intermediate_size", 2**45), ("num_hidden_layers", 10**6)])
def test_sizes_that_cannot_fit_in_memory_are_refused_before_anything_is_built(qwen2_folder, field, value, never_built):
    edit_json(qwen2_folder / "config.json", setter(**{field: value}, layer_types=DELETE))
    e = refused(CheckpointError, lambda: Qwen2.from_pretrained(qwen2_folder), qwen2_folder / "config.json",
                "bytes", "parameters", "more than this machine's")
    asked = int(re.search(r"need ([\d,]+) bytes", str(e)).group(1).replace(",", ""))
    cfg = json.loads((qwen2_folder / "config.json").read_text())
    assert asked == Qwen2Config.from_dict(cfg).num_parameters("lm") * 4 > physical_memory()   # the size asked for


def test_many_layers_that_fit_in_memory_are_refused_before_the_model_is_built(tmp_path, never_built):
    """Tiny layers: 10**6 of them fit in memory, but the file holds 2; building the shapes of
    10**6 layers to find that out would take minutes."""
    folder = copy_folder("qwen2_lm_untied", tmp_path / "q", ["config.json", "model.safetensors"])
    edit_json(folder / "config.json", setter(num_hidden_layers=10**6, layer_types=DELETE, hidden_size=8,
                                             intermediate_size=1, vocab_size=768, num_attention_heads=2,
                                             num_key_value_heads=1))
    cfg = Qwen2Config.from_json(folder / "config.json")
    assert cfg.num_parameters() * 4 < physical_memory()
    refused(CheckpointError, lambda: Qwen2.from_pretrained(folder), folder / "config.json",
            "num_hidden_layers is 1,000,000 but the weights in model.safetensors hold 2 layers (0-1)")
    refused(CheckpointError, lambda: Qwen2.check_pretrained(folder), folder / "config.json", "num_hidden_layers")


def test_num_parameters_counts_what_the_model_holds():
    for tie in (True, False):
        for head_dim in (None, 24):
            cfg = Qwen2Config(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim,
                              tie_word_embeddings=tie, num_labels=5)
            for cls in (Qwen2, qwen2_module.Qwen2ForSequenceClassification):
                with torch.device("meta"):
                    assert cls(cfg).num_parameters() == cfg.num_parameters(cls._head)
        cfg = GPT2Config(vocab_size=61, n_positions=17, n_embd=32, n_layer=3, n_head=4, tie_word_embeddings=tie)
        for cls in (GPT2, GPT2ForSequenceClassification):
            with torch.device("meta"):
                assert cls(cfg).num_parameters() == cfg.num_parameters(cls._head)


@pytest.mark.parametrize("value", ["1e-6", None, [1e-6], -1.0, 0.0, math.inf, math.nan, True])
def test_rms_norm_eps_must_be_a_positive_finite_number(qwen2_folder, value, never_built):
    edit_json(qwen2_folder / "config.json", setter(rms_norm_eps=value))
    refused(CheckpointError, lambda: Qwen2.from_pretrained(qwen2_folder), qwen2_folder / "config.json",
            "rms_norm_eps must be a finite number in (0.0, inf)", repr(value))


@pytest.mark.parametrize("value", [math.inf, math.nan, -1.0, "1e6", None])
def test_rope_theta_must_be_a_positive_finite_number(qwen2_folder, value, never_built):
    edit_json(qwen2_folder / "config.json", setter(rope_parameters={"rope_type": "default", "rope_theta": value}))
    with pytest.raises(CheckpointError, match="rope_theta") as e:
        Qwen2.from_pretrained(qwen2_folder)
    assert str(qwen2_folder / "config.json") in str(e.value)


def test_a_tensor_under_both_key_layouts_is_refused(tmp_path):
    folder = copy_folder("qwen2_lm_tied", tmp_path / "q")
    t = dict(load_safetensors(folder / "model.safetensors"))
    t["norm.weight"] = t["model.norm.weight"] + 1                           # the bare Qwen2Model layout too
    save_safetensors(t, folder / "model.safetensors")
    refused(CheckpointError, lambda: Qwen2.from_pretrained(folder), folder / "model.safetensors",
            "'model.norm.weight'", "'norm.weight'", "both key layouts")


def test_gpt2_tensor_under_both_key_layouts_is_refused(tmp_path):
    folder = copy_folder("gpt2_lm_safetensors", tmp_path / "g")
    t = dict(load_safetensors(folder / "model.safetensors"))
    t["ln_f.bias"] = t["transformer.ln_f.bias"]
    save_safetensors(t, folder / "model.safetensors")
    refused(CheckpointError, lambda: GPT2.from_pretrained(folder), folder / "model.safetensors", "both key layouts")


def test_missing_tie_word_embeddings_is_untied_as_in_transformers(qwen2_folder):
    """transformers' Qwen2Config defaults to an untied head: the stored lm_head is used, and the
    logits are the reference library's."""
    edit_json(qwen2_folder / "config.json", setter(tie_word_embeddings=DELETE))
    model = Qwen2.from_pretrained(qwen2_folder)
    assert model.lm_head is not None
    fixture = json.loads((SHARED_FIXTURES / "qwen2_lm_untied" / "fixture.json").read_text())
    with torch.no_grad():
        logits = model(torch.tensor(fixture["input_ids"]))
    expected = np.load(SHARED_FIXTURES / "qwen2_lm_untied" / "expected_output.npy")
    assert np.abs(logits.numpy() - expected).max() < 1e-5


def test_a_tied_checkpoint_without_tie_word_embeddings_misses_its_head_as_in_transformers(tmp_path):
    folder = copy_folder("qwen2_lm_tied", tmp_path / "q")
    edit_json(folder / "config.json", setter(tie_word_embeddings=DELETE))
    refused(CheckpointError, lambda: Qwen2.from_pretrained(folder), folder / "model.safetensors",
            "missing keys: lm_head.weight")


@pytest.mark.parametrize("value", ["false", "true", 0, None])
def test_tie_word_embeddings_must_be_a_boolean(qwen2_folder, value):
    edit_json(qwen2_folder / "config.json", setter(tie_word_embeddings=value))
    refused(CheckpointError, lambda: Qwen2.from_pretrained(qwen2_folder), qwen2_folder / "config.json",
            "tie_word_embeddings must be true or false", repr(value))


def test_missing_num_key_value_heads_takes_transformers_default(qwen2_folder):
    base = json.loads((qwen2_folder / "config.json").read_text())
    base.pop("num_key_value_heads")
    with pytest.raises(CheckpointError, match="num_attention_heads 4 is not a multiple of num_key_value_heads 32"):
        Qwen2Config.from_dict(base, "config.json")                          # transformers' default: 32
    assert Qwen2Config.from_dict({**base, "num_key_value_heads": None}).num_key_value_heads == 4   # null: one each
    assert Qwen2Config.from_dict({**base, "num_attention_heads": 32, "hidden_size": 512}).num_key_value_heads == 32
    cfg = Qwen2Config.from_dict({"model_type": "qwen2"})                   # every field transformers' default
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.tie_word_embeddings,
            cfg.eos_token_id, cfg.rope_theta) == (4096, 32, 32, False, None, 10000.0)


@pytest.mark.parametrize("change, fragment", [
    (setter(bos_token_id="750"), "bos_token_id must be null or a token id"),
    (setter(eos_token_id=[752, "x"]), "eos_token_id[1] must be null or a token id"),
    (setter(eos_token_id=-1), "eos_token_id"),
    (setter(pad_token_id=10**12), "pad_token_id must be null or an id of the vocabulary (0-767)"),
    (setter(pad_token_id=True), "pad_token_id"),
    (setter(use_sliding_window="false"), "use_sliding_window must be true or false"),
    (setter(attention_dropout=2.0), "attention_dropout"),
    (setter(hidden_act=["silu"]), "hidden_act ['silu'] is not supported"),
])
def test_other_fields_of_the_wrong_type(qwen2_folder, change, fragment, never_built):
    edit_json(qwen2_folder / "config.json", change)
    refused(CheckpointError, lambda: Qwen2.from_pretrained(qwen2_folder), qwen2_folder / "config.json", fragment)


# --------------------------------------------------------------------------------------------
# tokenizer.json, vocab.json + merges.txt, tokenizer_config.json
# --------------------------------------------------------------------------------------------

@pytest.fixture
def tok_json(tmp_path):
    return copy_folder("qwen2_tokenizer", tmp_path / "tj", ["tokenizer.json", "tokenizer_config.json"])


@pytest.fixture
def tok_pair(tmp_path):
    return copy_folder("qwen2_tokenizer", tmp_path / "tp", ["vocab.json", "merges.txt", "tokenizer_config.json"])


def _vocab_id(token: str, value):
    def change(d):
        d["model"]["vocab"][token] = value
    return change


def _added_id(index: int, value):
    def change(d):
        d["added_tokens"][index]["id"] = value
    return change


@pytest.mark.parametrize("change, fragment", [
    (_vocab_id("Ġthe", 2**31), "has id 2,147,483,648 but there are only 750 tokens"),
    (_vocab_id("Ġthe", 10**12), "has id 1,000,000,000,000"),
    (_added_id(2, 2**31), "has id 2,147,483,648, but the next free id is 752"),
    (_added_id(2, 10**12), "but the next free id is 752"),
    (_added_id(2, 760), "token '<|im_end|>' has id 760, but the next free id is 752"),
])
def test_huge_or_renumbered_ids_in_tokenizer_json(tok_json, change, fragment):
    edit_json(tok_json / "tokenizer.json", change)
    refused(TokenizerFileError, lambda: tokenizer_from_dir(tok_json), tok_json / "tokenizer.json", fragment)


@pytest.mark.parametrize("value", [2**31, 10**12])
def test_huge_ids_in_vocab_json(tok_pair, value):
    edit_json(tok_pair / "vocab.json", setter(**{"Ġthe": value}))
    refused(TokenizerFileError, lambda: tokenizer_from_dir(tok_pair), tok_pair / "vocab.json", f"{value:,}")


@pytest.mark.parametrize("key, fragment", [
    ("2147483648", "token '<|endoftext|>' has id 2,147,483,648, but the next free id is 752"),
    ("1000000000000", "has id 1,000,000,000,000, but the next free id is 752"),
    ("\u00b2", "added_tokens_decoder entry '²'"),
    ("0750", "added_tokens_decoder entry '0750'"),
    ("-1", "added_tokens_decoder entry '-1'"),
])
def test_bad_added_tokens_decoder_keys(tok_pair, key, fragment):
    def change(d):                     # <|endoftext|> (750) takes the key; the other two 750, 751
        decoder = d["added_tokens_decoder"]
        d["added_tokens_decoder"] = {key: decoder["750"], "750": decoder["751"], "751": decoder["752"]}
    edit_json(tok_pair / "tokenizer_config.json", change)
    refused(TokenizerFileError, lambda: tokenizer_from_dir(tok_pair), tok_pair / "tokenizer_config.json", fragment)


@pytest.mark.parametrize("value", [[], [{"content": "<|im_end|>"}], "x", 5])
def test_added_tokens_decoder_of_the_wrong_type(tok_pair, value):
    edit_json(tok_pair / "tokenizer_config.json", setter(added_tokens_decoder=value))
    refused(TokenizerFileError, lambda: tokenizer_from_dir(tok_pair), tok_pair / "tokenizer_config.json",
            "added_tokens_decoder must be an object")


@pytest.mark.parametrize("normalizer", [{"type": "Sequence", "normalizers": 5},
                                        {"type": "Sequence", "normalizers": "NFC"},
                                        {"type": "Sequence", "normalizers": ["NFC"]},
                                        {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "NFKC"}]},
                                        ["NFC"], 5])
def test_normalizer_of_the_wrong_type(tok_json, normalizer):
    edit_json(tok_json / "tokenizer.json", setter(normalizer=normalizer))
    refused(TokenizerFileError, lambda: tokenizer_from_dir(tok_json), tok_json / "tokenizer.json", "normalizer")


def test_normalizer_sequence_of_one_nfc_is_nfc(tok_json):
    edit_json(tok_json / "tokenizer.json", setter(normalizer={"type": "Sequence", "normalizers": [{"type": "NFC"}]}))
    assert tokenizer_from_dir(tok_json).normalizer == "NFC"


@pytest.mark.parametrize("pattern", [{"Regex": ["x"]}, {"Regex": {"a": 1}}, {"Regex": 5}, ["x"], None])
def test_split_regex_of_the_wrong_type(tok_json, pattern):
    def change(d):
        d["pre_tokenizer"]["pretokenizers"][0]["pattern"] = pattern
    edit_json(tok_json / "tokenizer.json", change)
    refused(TokenizerFileError, lambda: tokenizer_from_dir(tok_json), tok_json / "tokenizer.json",
            "pre_tokenizer Split pattern")


@pytest.mark.parametrize("value", [["Qwen2Tokenizer"], {"a": 1}, 5])
def test_tokenizer_class_of_the_wrong_type(tok_pair, value):
    edit_json(tok_pair / "tokenizer_config.json", setter(tokenizer_class=value))
    refused(TokenizerFileError, lambda: tokenizer_from_dir(tok_pair), tok_pair / "tokenizer_config.json",
            "tokenizer_class must be a string", repr(value))


def test_missing_tokenizer_class_with_nothing_to_say_which_is_refused(tok_pair):
    """transformers' AutoTokenizer cannot load this folder either; GPT-2's pre-tokenizer would
    silently split Qwen2's digits wrongly."""
    edit_json(tok_pair / "tokenizer_config.json", setter(tokenizer_class=DELETE))
    refused(TokenizerFileError, lambda: tokenizer_from_dir(tok_pair), tok_pair / "tokenizer_config.json",
            "tokenizer_class is missing")


def test_missing_tokenizer_class_follows_config_json_model_type(tmp_path):
    folder = copy_folder("qwen2_lm_tied", tmp_path / "q", ["config.json", "vocab.json", "merges.txt",
                                                           "tokenizer_config.json"])
    edit_json(folder / "tokenizer_config.json", setter(tokenizer_class=DELETE))
    tok = tokenizer_from_dir(folder)
    assert (tok.pretokenizer, tok.normalizer) == ("qwen2", "NFC")
    for case in json.loads((TOK / "cases.json").read_text(encoding="utf-8")):
        assert tok.encode(case["text"], allowed_special="all") == case["ids"]
    edit_json(folder / "config.json", setter(model_type="llama"))
    refused(TokenizerFileError, lambda: tokenizer_from_dir(folder), folder / "config.json", "model_type 'llama'")


def test_tokenizer_json_without_added_tokens_takes_them_from_tokenizer_config(tok_json):
    """As transformers' PreTrainedTokenizerFast: added_tokens_decoder supplies what tokenizer.json lacks."""
    original = tokenizer_from_dir(TOK)
    edit_json(tok_json / "tokenizer.json", setter(added_tokens=DELETE))
    tok = tokenizer_from_dir(tok_json)
    assert tok.special_tokens == original.special_tokens == {"<|endoftext|>": 750, "<|im_start|>": 751,
                                                             "<|im_end|>": 752}
    for case in json.loads((TOK / "chat_cases.json").read_text(encoding="utf-8")):
        assert tok.encode(case["text"], allowed_special="all") == case["ids"]
        assert tok.decode(case["ids"]) == case["text"]


def test_tokenizer_json_alone_without_added_tokens_has_none_as_in_tokenizers(tok_json):
    (tok_json / "tokenizer_config.json").unlink()
    edit_json(tok_json / "tokenizer.json", setter(added_tokens=DELETE))
    tok = tokenizer_from_dir(tok_json)
    assert tok.special_tokens == {} and tok.vocab_size == 750


def test_added_tokens_decoder_must_agree_with_tokenizer_json(tok_json):
    def change(d):
        d["added_tokens_decoder"]["753"] = d["added_tokens_decoder"].pop("752")
    edit_json(tok_json / "tokenizer_config.json", change)
    refused(TokenizerFileError, lambda: tokenizer_from_dir(tok_json), tok_json / "tokenizer_config.json",
            "'<|im_end|>' with id 753 clashes")


@pytest.mark.parametrize("field, value", [("eos_token", "<|im_stop|>"), ("pad_token", "<pad>"), ("bos_token", "<s>"),
                                          ("unk_token", {"content": "<unk>"}), ("additional_special_tokens", ["<x>"])])
@pytest.mark.parametrize("folder", ["tok_json", "tok_pair"])
def test_special_tokens_must_be_in_the_vocabulary(request, folder, field, value):
    folder = request.getfixturevalue(folder)
    edit_json(folder / "tokenizer_config.json", setter(**{field: value}))
    refused(TokenizerFileError, lambda: tokenizer_from_dir(folder), folder / "tokenizer_config.json",
            field, "is not a token of this tokenizer")


@pytest.mark.parametrize("value", [5, ["<|im_end|>"], {"text": "<|im_end|>"}])
def test_special_tokens_of_the_wrong_type(tok_json, value):
    edit_json(tok_json / "tokenizer_config.json", setter(eos_token=value))
    refused(TokenizerFileError, lambda: tokenizer_from_dir(tok_json), tok_json / "tokenizer_config.json", "eos_token")


@pytest.mark.parametrize("with_config", [True, False])
def test_vocab_json_token_outside_the_byte_alphabet_is_refused(tok_pair, with_config):
    """Such a token can never be decoded to bytes; before, it silently became a special token."""
    if not with_config:
        (tok_pair / "tokenizer_config.json").unlink()
    else:                                 # the added tokens move up one id to make room
        edit_json(tok_pair / "tokenizer_config.json", lambda d: d.update(added_tokens_decoder={
            str(int(k) + 1): v for k, v in d["added_tokens_decoder"].items()}))
    edit_json(tok_pair / "vocab.json", setter(**{"\u014bx": 750}))
    refused(TokenizerFileError, lambda: tokenizer_from_dir(tok_pair), tok_pair / "vocab.json",
            "'ŋx' (id 750) has characters outside the byte alphabet")


def test_chat_template_cut_inside_the_default_system_turn_is_refused(tok_json):
    template = json.loads((TOK / "tokenizer_config.json").read_text())["chat_template"]
    start = template.index("'<|im_start|>system\\nYou are")
    end = template.index("<|im_end|>\\n'", start)
    for cut in range(start + 1, end + 12, 7):                                # every few characters of the turn
        edit_json(tok_json / "tokenizer_config.json", setter(chat_template=template[:cut]))
        refused(TokenizerFileError, lambda: default_system_from_dir(tok_json), tok_json / "tokenizer_config.json",
                "chat_template")


def test_whole_templates_pass_and_give_their_default_system():
    assert check_template(json.loads((TOK / "tokenizer_config.json").read_text())["chat_template"]) is None
    qwen25 = QWEN25_TEMPLATE
    assert check_template(qwen25) is None and default_system_from_template(qwen25) == QWEN25_SYSTEM


# Qwen2.5-Instruct's chat template (tokenizer_config.json on the hub), with tools
QWEN25_TEMPLATE = (
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are "
    "provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n")


# --------------------------------------------------------------------------------------------
# PEFT adapter
# --------------------------------------------------------------------------------------------

@pytest.fixture
def adapter(tmp_path):
    return copy_folder("gpt2_lora_peft", tmp_path / "a", ["adapter_config.json", "adapter_model.safetensors"])


@pytest.fixture
def base():
    return GPT2.from_pretrained(SHARED_FIXTURES / "gpt2_lm_safetensors")


@pytest.mark.parametrize("change, fragment", [
    (setter(r=10**12), "r is 1,000,000,000,000 for transformer.h.0.attn.c_attn, but adapter_model.safetensors"),
    (setter(r=8), "r is 8 for"),
    (setter(rank_pattern={"h.1.attn.c_proj": 2**40}), "r is 1,099,511,627,776 for transformer.h.1.attn.c_proj"),
    (setter(target_modules="(c_attn"), "target_modules '(c_attn' is not a valid regex"),
    (setter(rank_pattern={"c_attn[": 4}), "rank_pattern key"),
    (setter(alpha_pattern={"*": 8}), "alpha_pattern key"),
    (setter(lora_alpha=1e300), "above 65504"),
    (setter(target_modules=["c_attn", 5]), "target_modules must be"),
    (setter(use_rslora="false"), "use_rslora"),
    (setter(exclude_modules=["c_attn"]), "exclude_modules=['c_attn'] is not supported"),
])
def test_bad_adapter_configs_are_refused_before_the_model_changes(adapter, base, change, fragment):
    edit_json(adapter / "adapter_config.json", change)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    refused(CheckpointError, lambda: load_adapter(base, adapter), adapter / "adapter_config.json", fragment)
    assert lora_layers(base) == {} and all(torch.equal(before[k], v) for k, v in base.state_dict().items())


def test_a_huge_rank_for_modules_without_weights_is_refused_before_allocating(base):
    """No weights to compare with (add_lora on its own): the A and B matrices' size against memory."""
    n = physical_memory() // (4 * (32 + 96)) + 1                           # just over for one c_attn
    with pytest.raises(ConfigError, match=r"LoRA matrices of 2 modules need [\d,]+ bytes"):
        add_lora(base, LoRAConfig(r=n, alpha=1e9, target_modules=["c_attn"]))
    assert lora_layers(base) == {}


def test_the_reference_adapter_still_loads(adapter, base):
    load_adapter(base, adapter)
    fixture = json.loads((SHARED_FIXTURES / "gpt2_lora_peft" / "fixture.json").read_text())
    with torch.no_grad():
        logits = base(torch.tensor(fixture["input_ids"]))
    assert np.abs(logits.numpy() - np.load(SHARED_FIXTURES / "gpt2_lora_peft" / "expected_output.npy")).max() < 1e-4


def test_fits_memory_names_the_size_asked_for(tmp_path):
    with pytest.raises(CheckpointError, match=r"x: the tensors need 2,000,000,000,000,000 bytes \(1,862,645"):
        check_fits_memory(2 * 10**15, tmp_path / "x", "the tensors")
    check_fits_memory(1000, tmp_path / "x", "the tensors")


# --------------------------------------------------------------------------------------------
# Classifier folder
# --------------------------------------------------------------------------------------------

@pytest.fixture
def classifier(tmp_path):
    return copy_folder("gpt2_classifier_safetensors", tmp_path / "c", ["config.json", "model.safetensors"])


NAMES = ["sadness", "joy", "love", "anger", "fear", "surprise"]


@pytest.mark.parametrize("id2label, label2id, fragment", [
    (dict(zip("abcdef", NAMES)), None, "id2label keys must be exactly \"0\"..\"5\""),
    ({f"0{i}": n for i, n in enumerate(NAMES)}, None, "id2label keys must be exactly"),
    ({str(i + 1): n for i, n in enumerate(NAMES)}, None, "id2label keys must be exactly"),          # off by one
    ({str(i): n for i, n in enumerate(NAMES) if i != 3} | {"6": "anger"}, None, "id2label keys"),  # a gap
    ({str(i): None for i in range(6)}, None, "values must be distinct non-empty strings"),
    ({str(i): n for i, n in enumerate(NAMES[:5])}, None, "num_labels is 6"),                      # too few
    ({str(i): "joy" for i in range(6)}, None, "values must be distinct"),
    ({str(i): n for i, n in enumerate(NAMES)}, {n: 5 - i for i, n in enumerate(NAMES)}, "not the inverse"),
    ({str(i): n for i, n in enumerate(NAMES)}, {n: str(i) for i, n in enumerate(NAMES)}, "not the inverse"),
    ([NAMES], None, "id2label must be an object"),
])
def test_label_maps_must_name_each_class_once(classifier, id2label, label2id, fragment):
    edit_json(classifier / "config.json", setter(id2label=id2label, label2id=label2id or DELETE, num_labels=6))
    refused(CheckpointError, lambda: GPT2ForSequenceClassification.from_pretrained(classifier),
            classifier / "config.json", fragment)


def test_label_names_come_back_in_id_order(classifier):
    model = GPT2ForSequenceClassification.from_pretrained(classifier)
    assert labels_of(model.config) == NAMES


@pytest.mark.parametrize("value", ["0", 10**12, -1, 512, True, 1.0])
def test_classifier_pad_token_id_must_be_an_id_of_the_vocabulary(classifier, value):
    edit_json(classifier / "config.json", setter(pad_token_id=value))
    refused(CheckpointError, lambda: GPT2ForSequenceClassification.from_pretrained(classifier),
            classifier / "config.json", "pad_token_id must be null or an id of the vocabulary (0-511)", repr(value))


@pytest.mark.parametrize("change, fragment", [
    (setter(embd_pdrop=1e30), "embd_pdrop"), (setter(layer_norm_epsilon="1e-5"), "layer_norm_epsilon"),
    (setter(n_inner=True), "n_inner"), (setter(activation_function=["gelu"]), "activation_function"),
    (setter(scale_attn_weights="yes"), "scale_attn_weights"), (setter(n_layer=10**6), "bytes"),
])
def test_gpt2_fields_of_the_wrong_type(classifier, change, fragment, never_built):
    edit_json(classifier / "config.json", change)
    refused(CheckpointError, lambda: GPT2ForSequenceClassification.from_pretrained(classifier),
            classifier / "config.json", fragment)


def test_safetensors_header_bytes_still_refused_in_a_qwen2_folder(qwen2_folder):
    raw = bytearray((qwen2_folder / "model.safetensors").read_bytes())
    raw[0:8] = struct.pack("<Q", 2**40)
    (qwen2_folder / "model.safetensors").write_bytes(bytes(raw))
    refused(CheckpointError, lambda: load_causal_lm(qwen2_folder), qwen2_folder / "model.safetensors", "header length")


def test_a_dtype_of_the_wrong_type_in_a_safetensors_header(qwen2_folder):
    raw = (qwen2_folder / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header["model.norm.weight"]["dtype"] = ["F32"]
    blob = json.dumps(header).encode()
    (qwen2_folder / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n:])
    refused(CheckpointError, lambda: load_causal_lm(qwen2_folder), qwen2_folder / "model.safetensors",
            "tensor 'model.norm.weight': dtype ['F32'] is not supported")


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_weights_holding_nan_or_infinity_are_refused(qwen2_folder, adapter, base, value):
    """No checksum guards the tensor bytes; a corrupted one that makes a NaN would make every output NaN."""
    t = dict(load_safetensors(qwen2_folder / "model.safetensors"))
    t["model.layers.1.mlp.up_proj.weight"] = t["model.layers.1.mlp.up_proj.weight"].clone()
    t["model.layers.1.mlp.up_proj.weight"][3, 5] = value
    save_safetensors(t, qwen2_folder / "model.safetensors")
    refused(CheckpointError, lambda: load_causal_lm(qwen2_folder), qwen2_folder / "model.safetensors",
            "model.layers.1.mlp.up_proj.weight holds 1 values that are NaN or infinite")
    a = dict(load_safetensors(adapter / "adapter_model.safetensors"))
    key = next(k for k in sorted(a) if k.endswith("lora_B.weight"))
    a[key] = a[key].clone()
    a[key][0, 0] = value
    save_safetensors(a, adapter / "adapter_model.safetensors")
    refused(CheckpointError, lambda: load_adapter(base, adapter), adapter / "adapter_model.safetensors",
            f"{key} holds 1 values that are NaN or infinite")
    assert lora_layers(base) == {}


def test_classifier_without_pad_pads_with_an_id_of_the_vocabulary(classifier):
    """pad_token_id null and eos 50256 beyond the 512-token vocabulary (as the fixture's config):
    the examples pad with 0, not with an id the embedding has no row for."""
    edit_json(classifier / "config.json", setter(pad_token_id=None))
    model = GPT2ForSequenceClassification.from_pretrained(classifier)

    class Ids:
        def encode(self, text):
            return [5, 17, 300][:len(text)]
    ex = ClassificationExamples(["a", "abc"], ["joy", "fear"], Ids(), model.config)
    batch = ex.collate([0, 1])
    assert ex.pad_id == 0 and batch["input_ids"].tolist() == [[5, 0, 0], [5, 17, 300]]
    with torch.no_grad():
        assert torch.isfinite(model(batch["input_ids"], attention_mask=batch["attention_mask"])).all()
