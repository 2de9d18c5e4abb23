"""LoRA (5.5.2): zero-init equals the base, merge/unmerge, PEFT's folder format both ways, bad configs."""
import json
import shutil

import numpy as np
import pytest
import torch

from conftest import SHARED_FIXTURES, needs_fixtures
from lm.checkpoints.safetensors import load_safetensors
from lm.errors import CheckpointError, ConfigError
from lm.finetune.lora import (LoRAConfig, LoRALinear, add_lora, count_parameters, load_adapter, lora_layers, merge,
                              merge_and_unload, read_adapter_config, save_adapter, unmerge,
                              untie_output_layer)
from lm.models.gpt2 import GPT2, GPT2Config, GPT2ForSequenceClassification
from lm.training.engine import TrainConfig, train

PEFT = SHARED_FIXTURES / "gpt2_lora_peft"
BASE = SHARED_FIXTURES / "gpt2_lm_safetensors"


def tiny(seed=0, cls=GPT2, **kw):
    torch.manual_seed(seed)
    return cls(GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2, embd_pdrop=0.0,
                          attn_pdrop=0.0, resid_pdrop=0.0, **kw)).eval()


IDS = torch.tensor([[1, 5, 7, 9, 2, 3], [4, 4, 8, 1, 0, 6]])


def randomize_b(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora_layers(model).values():
            m.lora_B.weight.copy_(torch.randn(m.lora_B.weight.shape, generator=g) * 0.1)


def test_zero_init_is_the_base_model_and_only_a_b_train():
    model = tiny()
    before = model(IDS)
    layers = add_lora(model, LoRAConfig(r=4, alpha=8))
    assert sorted(layers) == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    assert torch.equal(model(IDS), before)                      # B = 0: exactly the base
    a = layers["transformer.h.0.attn.c_attn"]
    assert a.scaling == 2.0 and a.lora_A.weight.shape == (4, 16) and a.lora_B.weight.shape == (48, 4)
    assert not torch.all(a.lora_A.weight == 0)                 # A is Kaiming-uniform, bound 1/sqrt(in)
    assert a.lora_A.weight.abs().max() <= 1 / np.sqrt(16)
    trainable, total = count_parameters(model)
    assert trainable == 2 * (4 * 16 + 48 * 4)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        f"transformer.h.{i}.attn.c_attn.lora_{x}.weight" for i in range(2) for x in "AB"}


def test_lora_formula_by_hand():
    base = torch.nn.Linear(3, 2)
    layer = LoRALinear(base, r=1, alpha=3.0)
    with torch.no_grad():
        layer.lora_A.weight.copy_(torch.tensor([[1.0, 2.0, 0.0]]))
        layer.lora_B.weight.copy_(torch.tensor([[1.0], [-1.0]]))
    x = torch.tensor([[1.0, 1.0, 1.0]])
    expected = base(x) + 3.0 * torch.tensor([[3.0, -3.0]])      # (alpha/r) * B (A x)
    assert torch.allclose(layer(x), expected)
    assert torch.allclose(layer.delta_weight(), 3.0 * torch.tensor([[1.0, 2.0, 0.0], [-1.0, -2.0, 0.0]]))


def test_merge_unmerge_and_merge_and_unload():
    model = tiny()
    add_lora(model, LoRAConfig(r=4, alpha=8, target_modules=["c_attn", "c_proj", "c_fc"]))
    randomize_b(model)
    base_w = model.transformer.h[0].mlp.c_fc.base.weight.clone()
    adapted = model(IDS)
    merge(model)
    assert (model(IDS) - adapted).abs().max() < 1e-6
    unmerge(model)
    assert (model(IDS) - adapted).abs().max() < 1e-6
    assert (model.transformer.h[0].mlp.c_fc.base.weight - base_w).abs().max() < 1e-6
    merge_and_unload(model)
    assert not lora_layers(model) and "lora" not in " ".join(model.state_dict())
    assert (model(IDS) - adapted).abs().max() < 1e-6


def test_training_moves_only_the_adapter(tmp_path):
    model = tiny()
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    add_lora(model, LoRAConfig(r=2, alpha=4))
    data = torch.randint(0, 50, (400,))
    train(model, data, None, TrainConfig(max_steps=5, batch_size=4, context=8, lr=1e-2), None)
    state = model.state_dict()
    for k, v in frozen.items():
        k2 = k.replace("c_attn.", "c_attn.base.")
        assert torch.equal(state[k2], v), k
    assert all(m.lora_B.weight.abs().sum() > 0 for m in lora_layers(model).values())


@needs_fixtures
def test_peft_adapter_reproduces_reference_logits_and_merges():
    fx = json.loads((PEFT / "fixture.json").read_text())
    expected = torch.from_numpy(np.load(PEFT / "expected_output.npy"))
    model = GPT2.from_pretrained(BASE)
    cfg = load_adapter(model, PEFT)
    assert cfg.r == 4 and cfg.alpha == 8 and cfg.fan_in_fan_out and sorted(cfg.target_modules) == ["c_attn", "c_proj"]
    assert len(lora_layers(model)) == 6                         # c_attn, attn.c_proj, mlp.c_proj x 2 layers
    ids = torch.tensor(fx["input_ids"])
    with torch.no_grad():
        out = model(ids)
        assert (out - expected).abs().max() < 1e-5
        base = GPT2.from_pretrained(BASE)(ids)
        assert (out - base).abs().max() > 1e-3                  # the adapter does something
        merge(model)
        assert (model(ids) - expected).abs().max() < 1e-5


@needs_fixtures
def test_save_writes_peft_format_and_round_trips(tmp_path):
    model = GPT2.from_pretrained(BASE)
    load_adapter(model, PEFT)
    save_adapter(model, tmp_path / "ad", base_model_name_or_path=str(BASE))
    ours, theirs = load_safetensors(tmp_path / "ad" / "adapter_model.safetensors"), \
        load_safetensors(PEFT / "adapter_model.safetensors")
    assert sorted(ours) == sorted(theirs)                       # PEFT's key names
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    cfg = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    ref = json.loads((PEFT / "adapter_config.json").read_text())
    for key in ("peft_type", "r", "lora_alpha", "fan_in_fan_out", "bias", "task_type", "lora_dropout", "use_rslora"):
        assert cfg[key] == ref[key], key
    fresh = GPT2.from_pretrained(BASE)
    load_adapter(fresh, tmp_path / "ad")
    ids = torch.tensor([[5, 17, 300, 2]])
    with torch.no_grad():
        assert torch.equal(fresh(ids), model(ids))


def test_round_trip_with_modules_to_save(tmp_path):
    model = tiny(cls=GPT2ForSequenceClassification, num_labels=3)
    add_lora(model, LoRAConfig(r=2, alpha=2, modules_to_save=["score"], task_type="SEQ_CLS"))
    randomize_b(model)
    assert model.score.weight.requires_grad
    with torch.no_grad():
        model.score.weight.add_(1.0)
    save_adapter(model, tmp_path)
    keys = set(load_safetensors(tmp_path / "adapter_model.safetensors"))
    assert "base_model.model.score.weight" in keys and len(keys) == 5
    fresh = tiny(cls=GPT2ForSequenceClassification, num_labels=3)
    load_adapter(fresh, tmp_path)
    assert torch.equal(fresh(IDS), model(IDS))


def test_rslora_and_rank_pattern():
    model = tiny()
    layers = add_lora(model, LoRAConfig(r=4, alpha=8, use_rslora=True, rank_pattern={"h.1.attn.c_attn": 2}))
    assert layers["transformer.h.0.attn.c_attn"].scaling == 8 / 2.0
    assert layers["transformer.h.1.attn.c_attn"].r == 2


def test_regex_targets_and_bad_targets():
    model = tiny()
    layers = add_lora(model, LoRAConfig(target_modules=r".*h\.1\.mlp\.c_(fc|proj)"))
    assert sorted(layers) == ["transformer.h.1.mlp.c_fc", "transformer.h.1.mlp.c_proj"]
    with pytest.raises(ConfigError, match="already has LoRA"):
        add_lora(model, LoRAConfig())
    with pytest.raises(ConfigError, match="match no module.*c_attn"):
        add_lora(tiny(), LoRAConfig(target_modules=["q_proj"]))
    with pytest.raises(ConfigError, match="LayerNorm; LoRA wraps linear and embedding layers only"):
        add_lora(tiny(), LoRAConfig(target_modules=["ln_1"]))
    with pytest.raises(ConfigError, match="r must be a positive integer"):
        add_lora(tiny(), LoRAConfig(r=0))


def write_config(folder, **changes):
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["c_attn"], "fan_in_fan_out": True}
    cfg.update(changes)
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return folder / "adapter_config.json"


@pytest.mark.parametrize("changes, message", [
    ({"r": "4"}, "r must be a positive integer"),
    ({"r": 0}, "r must be a positive integer"),
    ({"lora_alpha": None}, "lora_alpha must be a positive number"),
    ({"target_modules": []}, "target_modules must be"),
    ({"peft_type": "IA3"}, "only LORA adapters"),
    ({"use_dora": True}, "use_dora=True is not supported"),
    ({"bias": "all"}, "bias='all' is not supported"),
    ({"lora_dropout": 1.5}, "lora_dropout must be in"),
    ({"rank_pattern": {"c_attn": -1}}, "rank_pattern must map"),
])
def test_malformed_adapter_config_is_one_clear_error(tmp_path, changes, message):
    path = write_config(tmp_path, **changes)
    with pytest.raises(CheckpointError, match=message) as e:
        read_adapter_config(path)
    assert str(path) in str(e.value)


def test_unreadable_adapter_config_and_missing_weights(tmp_path):
    (tmp_path / "adapter_config.json").write_text('{"r": 4, "r": 5}')
    with pytest.raises(CheckpointError, match="cannot read config: duplicate key .r."):
        read_adapter_config(tmp_path / "adapter_config.json")
    (tmp_path / "adapter_config.json").write_text('[1, 2]')
    with pytest.raises(CheckpointError, match="not a JSON object"):
        read_adapter_config(tmp_path / "adapter_config.json")
    write_config(tmp_path, lora_alpha=8)
    with pytest.raises(CheckpointError, match="no adapter weights"):
        load_adapter(tiny(), tmp_path)
    with pytest.raises(CheckpointError, match="missing key 'r'"):
        path = write_config(tmp_path)
        d = json.loads(path.read_text())
        del d["r"]
        path.write_text(json.dumps(d))
        read_adapter_config(path)


@needs_fixtures
def test_adapter_for_another_model_is_refused(tmp_path):
    shutil.copytree(PEFT, tmp_path / "ad")
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_adapter(tiny(), tmp_path / "ad")                   # n_embd 16, the adapter's is 32


def test_untied_output_layer_takes_lora_and_keeps_the_logits(tmp_path):
    model = tiny()
    untied = untie_output_layer(model)
    assert untied.lm_head is not None and torch.equal(untied(IDS), model(IDS))
    untied.save_pretrained(tmp_path / "base")                   # the adapter's base model
    layers = add_lora(untied, LoRAConfig(r=2, alpha=4, target_modules=["lm_head"]))
    randomize_b(untied)
    head = layers["lm_head"]
    h = untied.transformer(IDS)
    expected = h @ (head.base.weight + head.delta_weight()).t()
    assert (untied(IDS) - expected).abs().max() < 1e-5          # GPT-2 reads lm_head.weight: W + ΔW
    save_adapter(untied, tmp_path / "ad")
    again = GPT2.from_pretrained(tmp_path / "base")
    load_adapter(again, tmp_path / "ad")
    assert (again(IDS) - untied(IDS)).abs().max() < 1e-6


def test_modules_to_save_match_by_suffix_as_peft():
    model = tiny()
    add_lora(model, LoRAConfig(r=2, alpha=2, modules_to_save=["ln_f"]))
    assert model.transformer.ln_f.weight.requires_grad
    with pytest.raises(ConfigError, match="has no module 'nope'"):
        add_lora(tiny(), LoRAConfig(modules_to_save=["nope"]))


@needs_fixtures
def test_adapters_travel_to_and_from_peft(tmp_path):
    """With `peft` installed (not a dependency): our adapter in PEFT gives our logits, and back."""
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    ids = torch.tensor([[5, 17, 300, 2, 99, 511, 0, 42]])
    ours = GPT2.from_pretrained(BASE).eval()
    add_lora(ours, LoRAConfig(r=4, alpha=8, target_modules=["c_attn", "c_fc"]))
    randomize_b(ours)
    save_adapter(ours, tmp_path / "ours", str(BASE))
    theirs = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(BASE), tmp_path / "ours")
    with torch.no_grad():
        assert (theirs.eval()(ids).logits - ours(ids)).abs().max() < 1e-5
    hf = transformers.AutoModelForCausalLM.from_pretrained(BASE)
    trained = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_proj"]))
    with torch.no_grad():
        for n, p in trained.named_parameters():
            if "lora_B" in n:
                p.normal_()
    trained.save_pretrained(tmp_path / "theirs")
    back = GPT2.from_pretrained(BASE).eval()
    load_adapter(back, tmp_path / "theirs")
    with torch.no_grad():
        assert (trained.eval()(ids).logits - back(ids)).abs().max() < 1e-5


def test_dropout_applies_to_the_input_of_a_as_peft():
    """PEFT's noise model: B A dropout(x), each input feature dropped on its own. With A = [1 2 4]
    and x = 1 the update of a row is 2 x (the sum of the kept weights): every one of 0, 2, ..., 14
    appears; dropout on A's output instead would give only 0 or 14."""
    layer = LoRALinear(torch.nn.Linear(3, 1), r=1, alpha=1.0, dropout=0.5)
    with torch.no_grad():
        layer.lora_A.weight.copy_(torch.tensor([[1.0, 2.0, 4.0]]))
        layer.lora_B.weight.copy_(torch.tensor([[1.0]]))
    x = torch.ones(400, 3)
    torch.manual_seed(0)
    with torch.no_grad():
        delta = (layer.train()(x) - layer.base(x)).squeeze(1)
        assert set(delta.round().tolist()) == {0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0}
        assert torch.allclose(delta, delta.round(), atol=1e-5)
        assert torch.allclose(layer.eval()(x) - layer.base(x), torch.full((400, 1), 7.0))   # eval: no dropout


def test_a_regex_target_must_match_the_whole_module_name():
    """A string target_modules is PEFT's `re.fullmatch`: `c_(fc|proj)` names no module of GPT-2
    (whose names are transformer.h.0.mlp.c_fc, ...); `.*\\.mlp\\.c_(fc|proj)` names the MLP's two
    projections and not attention's c_proj."""
    assert not LoRAConfig(target_modules=r"c_(fc|proj)").targets("transformer.h.0.mlp.c_fc")
    assert not LoRAConfig(target_modules=r"h\.0\.mlp").targets("transformer.h.0.mlp.c_fc")
    with pytest.raises(ConfigError, match="match no module"):
        add_lora(tiny(), LoRAConfig(target_modules=r"c_(fc|proj)"))
    layers = add_lora(tiny(), LoRAConfig(target_modules=r".*\.mlp\.c_(fc|proj)"))
    assert sorted(layers) == [f"transformer.h.{i}.mlp.{n}" for i in range(2) for n in ("c_fc", "c_proj")]
