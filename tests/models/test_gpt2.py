"""GPT-2 model: parity with the reference library's outputs, save/load round trips, checkpoint mismatches."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import SHARED_FIXTURES, needs_fixtures
from lm.errors import ConfigError, CheckpointError
from lm.checkpoints.safetensors import load_safetensors, save_safetensors
from lm.models.gpt2 import GPT2, GPT2Base, GPT2Config, GPT2ForSequenceClassification

TINY = dict(vocab_size=97, n_positions=32, n_embd=16, n_layer=2, n_head=2)

FIXTURES = [("gpt2_lm_safetensors", GPT2), ("gpt2_lm_bin", GPT2), ("gpt2_lm_sharded", GPT2),
            ("gpt2_base_safetensors", GPT2Base), ("gpt2_classifier_safetensors", GPT2ForSequenceClassification)]


@needs_fixtures
@pytest.mark.parametrize("folder, cls", FIXTURES)
def test_fixture_parity(folder, cls):
    """Each folder loads and reproduces the reference library's logits / hidden states within 1e-5."""
    model = cls.from_pretrained(SHARED_FIXTURES / folder)
    fixture = json.loads((SHARED_FIXTURES / folder / "fixture.json").read_text())
    expected = np.load(SHARED_FIXTURES / folder / "expected_output.npy")
    with torch.no_grad():
        got = model(torch.tensor(fixture["input_ids"])).numpy()
    assert got.shape == tuple(fixture["shape"])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


@needs_fixtures
def test_both_key_layouts_give_the_same_lm():
    """The base folder (no `transformer.` prefix) and the classifier folder load into the LM class too."""
    ids = torch.tensor([[5, 17, 300, 2, 99]])
    base_hidden = np.load(SHARED_FIXTURES / "gpt2_base_safetensors" / "expected_output.npy")
    lm = GPT2.from_pretrained(SHARED_FIXTURES / "gpt2_base_safetensors")
    with torch.no_grad():
        h = lm.transformer(torch.tensor(json.loads((SHARED_FIXTURES / "gpt2_base_safetensors" /
                                                    "fixture.json").read_text())["input_ids"]))
        np.testing.assert_allclose(h.numpy(), base_hidden, atol=1e-5, rtol=0)
        # logits = hidden @ wte.T (tied head)
        np.testing.assert_allclose(lm(ids).numpy(), (lm.transformer(ids) @ lm.transformer.wte.weight.T).numpy(),
                                   atol=1e-5)
    GPT2.from_pretrained(SHARED_FIXTURES / "gpt2_classifier_safetensors")   # score.weight ignored


@needs_fixtures
def test_classifier_reads_last_real_token():
    model = GPT2ForSequenceClassification.from_pretrained(SHARED_FIXTURES / "gpt2_classifier_safetensors")
    assert model.config.pad_token_id == 0 and model.config.num_labels == 6
    ids = torch.tensor([[5, 17, 300, 2]])
    padded = torch.tensor([[5, 17, 300, 2, 0, 0]])              # right padding with pad id 0
    with torch.no_grad():
        np.testing.assert_allclose(model(padded).numpy(), model(ids).numpy(), atol=1e-5)


def tiny_model(**kw) -> GPT2:
    torch.manual_seed(0)
    return GPT2(GPT2Config(**{**TINY, **kw})).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_save_load_round_trip(tmp_path, dtype):
    model = tiny_model().to(dtype)
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["architectures"] == ["GPT2LMHeadModel"] and cfg["n_embd"] == 16
    keys = load_safetensors(tmp_path / "model.safetensors")
    assert "lm_head.weight" not in keys                      # tied: stored once, as wte
    assert keys["transformer.h.0.mlp.c_fc.weight"].shape == (16, 64)   # Conv1D layout (in, out)
    back = GPT2.from_pretrained(tmp_path, dtype="auto")
    assert next(back.parameters()).dtype == dtype
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(back(ids), model(ids))


def test_untied_head_round_trip(tmp_path):
    model = tiny_model(tie_word_embeddings=False)
    model.save_pretrained(tmp_path)
    assert "lm_head.weight" in load_safetensors(tmp_path / "model.safetensors")
    back = GPT2.from_pretrained(tmp_path)
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(back(ids), model(ids))


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    t = dict(load_safetensors(tmp_path / "model.safetensors"))
    del t["transformer.h.1.ln_2.bias"]
    t["transformer.h.9.foo"] = torch.zeros(1)
    save_safetensors(t, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing keys: transformer\.h\.1\.ln_2\.bias.*"
                                              r"unexpected keys: transformer\.h\.9\.foo") as e:
        GPT2.from_pretrained(tmp_path)
    assert "model.safetensors" in str(e.value)


def test_attn_bias_buffers_are_dropped(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    t = dict(load_safetensors(tmp_path / "model.safetensors"))
    t["transformer.h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 32, 32))
    t["transformer.h.0.attn.masked_bias"] = torch.tensor(-1e4)
    save_safetensors(t, tmp_path / "model.safetensors")
    back = GPT2.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(back(torch.tensor([[3, 4]])), model(torch.tensor([[3, 4]])))


def test_wrong_shape_for_config(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["vocab_size"] = 100
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"transformer\.wte\.weight: shape \[97, 16\] does not fit"):
        GPT2.from_pretrained(tmp_path)


def test_bad_config_is_refused(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    for field, value, msg in [("n_head", 3, "not divisible"), ("activation_function", "swish", "swish"),
                              ("n_layer", 0, "n_layer")]:
        bad = dict(cfg, **{field: value})
        (tmp_path / "config.json").write_text(json.dumps(bad))
        with pytest.raises(CheckpointError, match=msg) as e:
            GPT2.from_pretrained(tmp_path)
        assert "config.json" in str(e.value)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        GPT2.from_pretrained(tmp_path)


def test_sequence_longer_than_positions_is_refused():
    with pytest.raises(ConfigError, match="n_positions=32"):
        tiny_model()(torch.zeros(1, 33, dtype=torch.long))


def test_causality_and_padding_invariance():
    """Changing a later token never changes earlier logits; left padding never changes real tokens' logits."""
    model = tiny_model()
    a = torch.tensor([[5, 6, 7, 8, 9]])
    b = torch.tensor([[5, 6, 7, 50, 51]])
    with torch.no_grad():
        torch.testing.assert_close(model(a)[:, :3], model(b)[:, :3])
        padded = torch.tensor([[0, 0, 5, 6, 7, 8, 9]])
        mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1]])
        torch.testing.assert_close(model(padded, attention_mask=mask)[:, 2:], model(a), atol=1e-5, rtol=0)


def test_trains_with_gradients():
    """The model is an ordinary nn.Module: a few SGD steps on one batch lower its loss."""
    model = tiny_model(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0).train()
    ids = torch.randint(0, 97, (4, 12), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 97), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0


def _tiny_news(tmp_path):
    d = tmp_path / "data" / "news"
    d.mkdir(parents=True)
    lines = [f"The market rose {i} points on day {i % 7} as traders bought shares." for i in range(300)]
    (d / "train.txt").write_text("\n".join(lines) + "\n")
    (d / "valid.txt").write_text("\n".join(lines[:40]) + "\n")
    return tmp_path / "data", lines


def test_gpt2_pretrain_stage_with_given_folder(tmp_path):
    """--gpt2 FOLDER: the stage loads those weights and tokenizer, measures perplexity and generates."""
    from lm.tokenizers.gpt2 import GPT2Tokenizer
    from lm.stages import RunConfig, run_stage
    data_dir, lines = _tiny_news(tmp_path)
    tok = GPT2Tokenizer.train(lines, 300)
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=tok.vocab_size, n_positions=64, n_embd=16, n_layer=1, n_head=2,
                            eos_token_id=tok.eot_id))
    model.save_pretrained(tmp_path / "m")
    tok.save(tmp_path / "m")
    metrics = run_stage("gpt2_pretrain", RunConfig(quick=True, gpt2=str(tmp_path / "m"), device="cpu"), data_dir,
                        tmp_path / "out")
    # an untrained model is close to uniform over the vocabulary
    assert 0.5 * tok.vocab_size < metrics["val_perplexity"] < 2 * tok.vocab_size
    assert set(metrics["samples"]["greedy"]) == {"Moscow", "New York", "The hurricane", "The President"}
    assert metrics["samples"]["greedy"]["Moscow"].startswith("Moscow")


@pytest.mark.slow
def test_gpt2_pretrain_stage_quick_on_embedded_data(tmp_path):
    """The whole quick stage on the embedded data: trains, reloads bit-identically, beats a unigram-ish model."""
    from lm.data.loaders import EMBEDDED_DIR
    from lm.stages import RunConfig, run_stage
    if not (EMBEDDED_DIR / "news" / "train.txt").is_file():
        pytest.skip("embedded data not generated")
    metrics = run_stage("gpt2_pretrain", RunConfig(quick=True, device="cpu"), EMBEDDED_DIR, tmp_path / "gpt2_pretrain")
    assert metrics["reload_identical"] is True
    assert metrics["val_perplexity"] < 100
    back = GPT2.from_pretrained(tmp_path / "pretrained" / "news")
    assert back.config.vocab_size == metrics["vocab_size"]


def test_the_two_small_bases_differ_in_vocabulary_and_steps_only(tmp_path):
    from dataclasses import asdict

    from lm.errors import ConfigError
    from lm.stages import RunConfig, settings_for
    from lm.stages.gpt2_pretrain import Settings, pretrain_config, pretrained_gpt2
    for quick in (True, False):
        s = settings_for(Settings, quick)
        plain, emotion = asdict(pretrain_config(s)), asdict(pretrain_config(s, "emotion"))
        assert plain["vocab_size"] == s.vocab_size and emotion["vocab_size"] == s.emotion_vocab_size == 16000
        assert emotion["steps"] == s.emotion_steps and plain["steps"] == s.steps
        assert {k for k in plain if plain[k] != emotion[k]} <= {"vocab_size", "steps"}
        assert plain["min_frequency"] == emotion["min_frequency"] == s.min_frequency == 2
    with pytest.raises(ConfigError, match="unknown base 'gpt3'"):
        pretrained_gpt2(RunConfig(run_dir=tmp_path), tmp_path, "gpt3")
