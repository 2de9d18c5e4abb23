"""`--model FOLDER` with the fine-tuning stages: a Qwen2 folder (the tiny random-weight fixture
`qwen2_lm_tied`) through emotion_sft, emotion_lora, emotion_classifier and instruct_sft on a tiny
data dir, with the book's real-weights settings; and the pre-flight taking `--model` for them."""
import json
from dataclasses import replace

import pytest
import torch

from conftest import REPO, SHARED_FIXTURES
from lm.chat import load_engine
from lm.finetune.lora import load_adapter, lora_layers
from lm.finetune.sft import IM_END, SFTExamples, chatml_stop_id, chatml_tokenizer, instruct_pair
from lm.models.gpt2 import GPT2, GPT2Config
from lm.models.qwen2 import Qwen2, Qwen2ForSequenceClassification
from lm.finetune.base_model import load_lm
from lm.stages import RunConfig, for_base, load_stage
from lm.stages.gpt2_pretrain import choose_base
from lm.stages.preflight import preflight
from lm.tokenizers.chat import IM_START
from lm.tokenizers.gpt2 import GPT2Tokenizer
from lm.tokenizers.hf_json import tokenizer_from_dir

QWEN2 = SHARED_FIXTURES / "qwen2_lm_tied"
STAGES = ["emotion_sft", "emotion_lora", "emotion_classifier", "instruct_sft"]
LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
# the book's settings with --model, made tiny: 32 training texts in 4 steps, 8 eval texts
REAL = dict(real_epochs=1, real_batch_size=8, val_batches=1, eval_batch=8)


@pytest.fixture(scope="module")
def qwen2():
    if not (QWEN2 / "config.json").is_file():
        pytest.skip(f"Qwen2 fixture not found at {QWEN2} (../shared is absent)")
    return QWEN2


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A handful of rows of the embedded emotion splits and instruct data (no news: no small GPT-2)."""
    data = tmp_path_factory.mktemp("model_flag") / "data"
    for rel, n in (("emotion/train.jsonl", 32), ("emotion/valid.jsonl", 8), ("emotion/test.jsonl", 8),
                   ("instruct/instruct.jsonl", 20)):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_text("".join((REPO / "data" / rel).read_text().splitlines(keepends=True)[:n]))
    return data


def run(name, folder, data_dir, out, **settings):
    module = load_stage(name)
    s = replace(module.Settings(), **settings)
    out.mkdir(parents=True, exist_ok=True)
    return module.run(RunConfig(quick=True, model=str(folder), run_dir=out.parent), s, data_dir, out)


def check_emotion(m, folder):
    assert m["eval_split"] == "test" and m["base_model"] == f"qwen2 weights from --model {folder}"
    for key in ("accuracy", "accuracy_valid"):
        assert isinstance(m[key], float) and 0 <= m[key] <= 1
    assert m["accuracy_per_epoch"] == [m["accuracy"]] and m["steps"] == 32 // 8
    assert len(m["loss_per_epoch"]) == 1 and 0 < m["loss_per_epoch"][0] < 20     # ln(768) = 6.6 at random
    assert sum(map(sum, m["confusion"]["matrix"])) == 8


def test_model_is_real_weights_of_its_family(qwen2, data_dir, tmp_path):
    """--model: that folder, the book's constant 5e-5 and no clipping; no small GPT-2 is trained."""
    module = load_stage("emotion_sft")
    cfg = RunConfig(model=str(qwen2), run_dir=tmp_path)
    base = choose_base(cfg, data_dir, "emotion")
    assert base.real and base.family == "qwen2" and base.folder == qwen2
    train = for_base(module.Settings(), base.real).train_config(base.real, cfg)
    assert (train.lr, train.schedule, train.grad_clip, train.warmup_steps) == (5e-5, "constant", 0.0, 0)
    assert not (tmp_path / "pretrained").exists()
    model, tok, eos = load_lm(base)
    assert isinstance(model, Qwen2) and eos == 752 and tok.decode([eos]) == IM_END   # config's eos_token_id


def test_emotion_sft_with_a_qwen2_folder(qwen2, data_dir, tmp_path):
    m = run("emotion_sft", qwen2, data_dir, tmp_path / "emotion_sft", **REAL, max_new_tokens=3)
    check_emotion(m, qwen2)


def test_emotion_lora_with_a_qwen2_folder(qwen2, data_dir, tmp_path, monkeypatch):
    """PEFT's default for Qwen2 (q_proj, v_proj; nn.Linear: fan_in_fan_out false), PEFT's key names,
    and the saved adapter on a fresh base reproduces the trained model's logits."""
    import lm.stages.emotion_lora as stage
    trained = {}
    save = stage.save_adapter

    def keep(model, folder, **kw):
        trained["model"] = model
        return save(model, folder, **kw)

    monkeypatch.setattr(stage, "save_adapter", keep)
    r = 4
    m = run("emotion_lora", qwen2, data_dir, tmp_path / "emotion_lora", **REAL, max_new_tokens=3, r=r, alpha=8.0)
    check_emotion(m, qwen2)
    # per layer: q_proj 64 -> 4 heads x 16 = 64, v_proj 64 -> 2 kv heads x 16 = 32; A (r, in) + B (out, r)
    hidden, q_out, v_out, layers = 64, 4 * 16, 2 * 16, 2
    assert m["trainable_parameters"] == layers * r * ((hidden + q_out) + (hidden + v_out)) == 1792
    base_total = sum(p.numel() for p in Qwen2.from_pretrained(qwen2).parameters())
    assert m["total_parameters"] == base_total + 1792
    assert m["lora"]["target_modules"] == ["q_proj", "v_proj"] and m["adapter_base"] == str(qwen2)

    adapter = tmp_path / "emotion_lora" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["target_modules"] == ["q_proj", "v_proj"] and config["fan_in_fan_out"] is False
    assert config["r"] == r and config["base_model_name_or_path"] == str(qwen2)
    from lm.checkpoints.safetensors import load_safetensors
    keys = sorted(load_safetensors(adapter / "adapter_model.safetensors"))
    assert len(keys) == 8 and "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight" in keys

    fresh = Qwen2.from_pretrained(qwen2)
    load_adapter(fresh, adapter)
    assert sorted(lora_layers(fresh)) == [f"model.layers.{i}.self_attn.{p}_proj" for i in range(2) for p in "qv"]
    ids = torch.tensor([[45, 271, 284, 17, 300, 12], [5, 6, 7, 8, 9, 10]])
    model = trained["model"].eval()
    assert any(l.lora_B.weight.abs().max() > 0 for l in lora_layers(model).values())   # it did train
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids), model(ids), atol=1e-6, rtol=0)


def test_emotion_lora_with_a_gpt2_folder_keeps_gpt2s_layout(data_dir, tmp_path):
    """A GPT-2 folder given as --model: PEFT's default for GPT-2, c_attn (Conv1D: fan_in_fan_out true)."""
    texts = [json.loads(x)["text"] for x in (data_dir / "emotion" / "train.jsonl").read_text().splitlines()]
    tok = GPT2Tokenizer.train(texts * 2, 300)
    torch.manual_seed(0)
    folder = tmp_path / "gpt2"
    GPT2(GPT2Config(vocab_size=tok.vocab_size, n_positions=128, n_embd=32, n_layer=1, n_head=2,
                    bos_token_id=tok.eot_id, eos_token_id=tok.eot_id)).save_pretrained(folder)
    tok.save(folder)
    m = run("emotion_lora", folder, data_dir, tmp_path / "emotion_lora", **REAL, max_new_tokens=3, r=4, alpha=8.0)
    assert m["lora"]["target_modules"] == ["c_attn"] and m["trainable_parameters"] == 4 * (32 + 3 * 32)
    assert m["base_model"] == f"gpt2 weights from --model {folder}" and 0 <= m["accuracy"] <= 1
    config = json.loads((tmp_path / "emotion_lora" / "adapter" / "adapter_config.json").read_text())
    assert config["target_modules"] == ["c_attn"] and config["fan_in_fan_out"] is True


def test_emotion_classifier_with_a_qwen2_folder(qwen2, data_dir, tmp_path):
    out = tmp_path / "emotion_classifier"
    m = run("emotion_classifier", qwen2, data_dir, out, **REAL)
    check_emotion(m, qwen2)
    model = Qwen2ForSequenceClassification.from_pretrained(out / "model")
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForSequenceClassification"] and config["model_type"] == "qwen2"
    assert [config["id2label"][str(i)] for i in range(6)] == LABELS and model.config.num_labels == 6
    assert config["pad_token_id"] == 750                                    # <|endoftext|>, Qwen's pad
    tok = tokenizer_from_dir(out / "model")                                 # copied whole: Qwen2's pre-tokenizer
    assert tok.pretokenizer == "qwen2" and tok.encode("12345") == tokenizer_from_dir(qwen2).encode("12345")


def test_instruct_sft_with_a_qwen2_folder(qwen2, data_dir, tmp_path):
    m = run("instruct_sft", qwen2, data_dir, tmp_path / "instruct_sft", **REAL, max_new_tokens=4, samples=2)
    assert m["train_examples"] == 18 and m["test_examples"] == 2                # the book's 90/10 split
    assert isinstance(m["exact_match"], float) and 0 <= m["exact_match"] <= 1
    assert len(m["loss_per_epoch"]) == 1 and 0 < m["loss_per_epoch"][0] < 20 and m["steps"] == 18 // 8
    assert len(m["samples"]) == 2 and m["base_model"] == f"qwen2 weights from --model {qwen2}"
    engine = load_engine(m["model_dir"])               # the book's format, markers as Qwen2's special ids
    assert engine.format == "book" and engine.markers == {IM_START, IM_END} and 752 not in engine.stop_ids
    ids = engine.encode_chat([{"role": "user", "content": "Add 2 and 3."}])
    assert ids == chatml_tokenizer(tokenizer_from_dir(qwen2)).encode(instruct_pair("Add 2 and 3.", "5").prompt)


def test_chatml_markers_are_single_ids_and_im_end_ends_the_answer(qwen2):
    """Qwen2's tokenizer has <|im_start|> (751) and <|im_end|> (752) as special tokens: the template's
    markers become those ids, and the completion ends with one <|im_end|>, no EOS after it."""
    tok = tokenizer_from_dir(qwen2)
    stop, enc = chatml_stop_id(tok, 750), chatml_tokenizer(tok)
    assert stop == 752
    pair = instruct_pair("Add 2 and 3.", "5")
    ex = SFTExamples([pair], enc, stop)
    seq, n_prompt = ex.seqs[0].tolist(), int(ex.prompt_lengths[0])
    assert seq[0] == 751 and seq[:n_prompt].count(751) == 3 and seq[:n_prompt].count(752) == 2
    assert seq[n_prompt:] == tok.encode("5\n") + [752]
    assert enc.decode(seq) == pair.prompt + pair.completion


def test_preflight_takes_model_for_the_finetuning_stages(qwen2, data_dir, tmp_path):
    """--model with these stages: no problem, and no small-GPT-2 corpus (news) is asked for."""
    modules = {name: load_stage(name) for name in STAGES}
    check = preflight(modules, data_dir, tmp_path / "run", model=str(qwen2))
    assert check.problems == [] and check.model == str(qwen2)
    without = preflight(modules, data_dir, tmp_path / "run")                   # the small GPT-2 needs the news
    assert len(without.problems) == 2 and all("news/" in p and "missing" in p for p in without.problems)
