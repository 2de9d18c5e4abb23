"""The base-model choice made once (`lm.finetune.base_model`, `gpt2_pretrain.choose_base`,
`lm.stages.for_base`) and the emotion evaluation written once (`lm.finetune.metrics.confusion`,
`load_emotion_data`, `train_by_epoch` for the CNN).

Oracles: each stage's settings, configs and loading give exactly what its own code gave before
issue 22 (those code paths are transcribed below as `old_*`)."""
from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, replace

import pytest
import torch

from conftest import REPO, tiny_gpt2
from lm.data.loaders import EMOTION_LABELS, data_file, eval_split, load_emotion
from lm.errors import ConfigError
from lm.finetune.base_model import base_model, family_name, load_lm, save_tokenizer, train_config
from lm.finetune.baselines import CNNClassifier, CNNConfig, label_ids
from lm.finetune.cnn_data import ClassificationExamples, WordVocab, classification_loss, predict_classes
from lm.finetune.emotion import label_scores, load_emotion_data
from lm.finetune.epochs import train_by_epoch
from lm.finetune.metrics import OTHER, accuracy, confusion
from lm.models.gpt2 import GPT2
from lm.models.qwen2 import Qwen2, Qwen2Config
from lm.rl.grpo import GRPOConfig
from lm.rl.warmup import EvalConfig, InstructConfig, WarmupConfig
from lm.stages import LMSettings, RunConfig, for_base, load_stage, settings_for
from lm.stages.gpt2_pretrain import choose_base, pretrained_gpt2
from lm.tokenizers.gpt2 import GPT2Tokenizer
from lm.training.engine import TrainConfig, train

EMBEDDED = REPO / "data"
CFG = RunConfig(seed=7, device="cpu")


# --------------------------------------------------------------------------------------------
# for_base: the real_* fields, against what each stage computed itself
# --------------------------------------------------------------------------------------------

def test_for_base_swaps_real_fields_only_for_real_weights():
    @dataclass
    class S:
        lr: float = 1.0
        real_lr: float = 2.0
        other: int = 3

    s = S()
    assert for_base(s, False) is s
    assert for_base(s, True) == S(lr=2.0, real_lr=2.0, other=3) and s.lr == 1.0     # a copy; s unchanged

    @dataclass
    class Unpaired:
        real_steps: int = 1

    with pytest.raises(TypeError, match="real_steps stands in for no field 'steps'"):
        for_base(Unpaired(), True)


def old_setup(s, real: bool, cfg: RunConfig):
    """lm/stages/emotion_sft.setup before issue 22: (engine settings, epochs, max_train)."""
    tcfg = train_config(real, s.real_lr if real else s.lr, s.real_batch_size if real else s.batch_size,
                        s.warmup_steps, s.val_batches, cfg.device, cfg.seed, 0 if real else s.group_by_length)
    return tcfg, s.real_epochs if real else s.epochs, s.real_max_train if real else None


@pytest.mark.parametrize("real", [False, True])
@pytest.mark.parametrize("quick", [True, False])
@pytest.mark.parametrize("stage", ["emotion_sft", "emotion_lora", "emotion_classifier", "instruct_sft"])
def test_finetune_settings_are_what_the_old_setup_made(stage, quick, real):
    s = settings_for(load_stage(stage).Settings, quick)
    run = for_base(s, real)
    assert (run.train_config(real, CFG), run.epochs, run.max_train) == old_setup(s, real, CFG)
    if stage == "emotion_lora":       # old: (s.real_targets or PEFT's default) if real else s.targets
        default = ["c_attn"]
        assert list(run.targets or default) == list((s.real_targets or default) if real else s.targets)


def test_the_emotion_stages_settings_did_not_move():
    """Values of the three emotion stages (they came from emotion_sft's EmotionSettings / Settings)."""
    sft, lora, head = (settings_for(load_stage(n).Settings, True)
                       for n in ("emotion_sft", "emotion_lora", "emotion_classifier"))
    assert (sft.epochs, sft.batch_size, sft.lr, sft.group_by_length, sft.max_new_tokens) == (5, 32, 2e-3, 50, 10)
    assert (lora.epochs, lora.batch_size, lora.lr, lora.group_by_length, lora.max_new_tokens) == (3, 64, 3e-3, 50, 10)
    assert (head.epochs, head.batch_size, head.lr, head.real_epochs) == (5, 64, 2e-3, 1)
    full = settings_for(load_stage("emotion_lora").Settings, False)
    assert (full.epochs, full.batch_size, full.lr, full.real_epochs, full.max_new_tokens) == (8, 32, 2e-3, 18, 10)


def old_grpo_configs(cfg: RunConfig, s, real: bool):
    """lm/stages/grpo.configs before issue 22 (it read `real` from cfg.model or cfg.gpt2)."""
    grpo = GRPOConfig(prompts_per_step=s.prompts_per_step, group_size=s.group_size, max_new_tokens=s.max_new_tokens,
                      temperature=s.temperature, beta=s.beta, epsilon=s.epsilon, mu=s.mu, steps=s.steps,
                      lr=s.real_lr if real else s.lr, checkpoint_interval=s.checkpoint_interval, seed=cfg.seed)
    instruct = None if real else InstructConfig(format_rate=s.instruct_format_rate,
                                                reworded_share=s.instruct_reworded_share, epochs=s.instruct_epochs,
                                                lr=s.instruct_lr)
    warmup = None if not s.sft_warmup else WarmupConfig(
        examples=None, epochs=s.warmup_epochs, batch_size=s.warmup_batch, lr=s.real_warmup_lr if real else s.warmup_lr,
        train_on_prompt=real)
    return grpo, EvalConfig(problems=s.eval_problems, max_new_tokens=s.eval_tokens), instruct, warmup


@pytest.mark.parametrize("real", [False, True])
@pytest.mark.parametrize("quick", [True, False])
@pytest.mark.parametrize("sft_warmup", [False, True])
def test_grpo_configs_are_what_the_old_stage_made(real, quick, sft_warmup):
    grpo = load_stage("grpo")
    s = replace(settings_for(grpo.Settings, quick), sft_warmup=sft_warmup)
    assert grpo.configs(CFG, for_base(s, real), real) == old_grpo_configs(CFG, s, real)


@pytest.mark.parametrize("real", [False, True])
def test_doc_labeling_and_gpt2_pretrain_settings_are_what_they_were(real):
    d = load_stage("doc_labeling").Settings()
    run = for_base(d, real)
    assert run.head_lr == (d.real_head_lr if real else d.head_lr)
    assert run.head_threads == (None if real else d.head_threads)                  # old: None if real
    for quick in (True, False):
        g = settings_for(load_stage("gpt2_pretrain").Settings, quick)
        run = for_base(g, real)
        old = (g.real_context, g.real_batch, g.real_eval_batches) if real else (g.context, g.batch, g.eval_batches)
        assert (run.context, run.batch, run.eval_batches) == old


@pytest.mark.parametrize("quick", [True, False])
def test_rnn_and_decoder_share_the_old_train_stage_config(quick):
    s = settings_for(load_stage("rnn_lm").Settings, quick)
    assert load_stage("decoder_lm").Settings is load_stage("rnn_lm").Settings is LMSettings
    old = TrainConfig(lr=s.lr, warmup_steps=s.warmup_steps, batch_size=s.batch_size, context=s.context,
                      max_steps=s.steps, max_tokens=s.max_tokens, eval_interval=s.eval_interval,
                      eval_batches=s.eval_batches, checkpoint_interval=s.checkpoint_interval,
                      device=CFG.device, seed=CFG.seed)
    assert s.train_config(CFG) == old


@pytest.mark.parametrize("quick", [True, False])
def test_rnn_lm_and_decoder_lm_train_their_model_with_the_shared_settings(quick, monkeypatch, tmp_path):
    """Each stage is LMSettings.train with its model's name: the kind, the engine's settings and the
    data limits reach train_language_model as the settings state them."""
    calls = []
    monkeypatch.setattr("lm.stages.train_language_model", lambda *a, **k: calls.append((a, k)) or {"ok": 1})
    s = settings_for(LMSettings, quick)
    for stage, kind in (("rnn_lm", "rnn"), ("decoder_lm", "transformer")):
        assert load_stage(stage).run(CFG, s, tmp_path / "data", tmp_path / stage) == {"ok": 1}
        (got_kind, data_dir, out_dir, train_cfg), kwargs = calls[-1]
        assert (got_kind, data_dir, out_dir, train_cfg) == (kind, tmp_path / "data", tmp_path / stage, s.train_config(CFG))
        assert kwargs == dict(vocab_size=s.vocab_size, max_train_lines=s.train_lines, max_valid_lines=s.valid_lines)


# --------------------------------------------------------------------------------------------
# BaseModel: ours or real weights, the family, loading and saving
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    """A run dir whose pretrained/news and pretrained/emotion hold a tiny 'pretrained' GPT-2."""
    run_dir = tmp_path_factory.mktemp("base") / "run"
    lines = [json.loads(x)["text"] for x in (EMBEDDED / "emotion" / "train.jsonl").read_text().splitlines()[:64]]
    model, tok = tiny_gpt2(lines, 64)
    folder = run_dir / "pretrained" / "news"
    model.save_pretrained(folder)
    tok.save(folder)
    (folder / "pretrain.json").write_text(json.dumps({"steps": 3, "tokens": 1000, "parameters": 1234}))
    shutil.copytree(folder, folder.with_name("emotion"))
    return run_dir


def tiny_qwen2(folder):
    torch.manual_seed(0)
    Qwen2(Qwen2Config(vocab_size=64, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, bos_token_id=None, eos_token_id=63)).save_pretrained(folder)
    return folder


def test_our_base_and_real_weights(ours, tmp_path):
    folder = ours / "pretrained" / "news"
    base = choose_base(RunConfig(run_dir=ours), tmp_path)                 # cached: nothing trained
    assert base.folder == folder and not base.real and base.family == "gpt2" == family_name(GPT2)
    assert base.budget["steps"] == 3 and base.source.startswith("small GPT-2 pretrained here")
    assert choose_base(RunConfig(run_dir=ours), tmp_path, "emotion").folder == folder.with_name("emotion")
    given = choose_base(RunConfig(model=str(folder)), tmp_path)           # --model: no run dir needed
    assert given.real and given.given == str(folder) and given.budget is None
    assert given.source == f"gpt2 weights from --model {folder}" == base_model(folder, str(folder)).source
    assert pretrained_gpt2(RunConfig(gpt2=str(folder)), tmp_path) == folder
    with pytest.raises(ConfigError, match="unknown base 'gpt2'"):
        choose_base(RunConfig(run_dir=ours), tmp_path, "gpt2")
    with pytest.raises(ConfigError, match="needs RunConfig.run_dir"):
        choose_base(RunConfig(), tmp_path)


def test_a_stage_that_builds_gpt2_refuses_another_family(tmp_path):
    qwen = tiny_qwen2(tmp_path / "qwen")
    cfg = RunConfig(model=str(qwen))
    base = choose_base(cfg, tmp_path)                                     # a fine-tuning stage: any family
    assert base.real and base.family == "qwen2" and base.source == f"qwen2 weights from --model {qwen}"
    with pytest.raises(ConfigError, match=r"model_type 'qwen2', but this stage builds GPT-2 \(give a gpt2 folder\)"):
        pretrained_gpt2(cfg, tmp_path)
    assert base.require(Qwen2, "why") is base


def test_load_lm_on_our_base_is_the_old_gpt2_path(ours):
    """Before issue 22 our small GPT-2 was loaded by GPT2.from_pretrained + GPT2Tokenizer.from_dir with
    <|endoftext|> as EOS; the one path gives the same weights, token ids and EOS."""
    base = base_model(ours / "pretrained" / "news")
    model, tok, eos = load_lm(base)
    old_model, old_tok = GPT2.from_pretrained(base.folder), GPT2Tokenizer.from_dir(base.folder)
    assert type(model) is GPT2 and eos == old_tok.eot_id
    old_state = old_model.state_dict()
    assert all(torch.equal(v, old_state[k]) for k, v in model.state_dict().items())
    texts = [json.loads(x)["text"] for x in (EMBEDDED / "emotion" / "test.jsonl").read_text().splitlines()]
    texts.append("Predict the emotion for the following text: i feel fine\nEmotion: joy")
    assert [tok.encode(t) for t in texts] == [old_tok.encode(t) for t in texts]
    assert tok.special_tokens == old_tok.special_tokens and tok.vocab_size == old_tok.vocab_size


def test_save_tokenizer_copies_the_bases_files(ours, tmp_path):
    base = base_model(ours / "pretrained" / "news")
    save_tokenizer(base, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["merges.txt", "vocab.json"]
    for name in ("merges.txt", "vocab.json"):
        assert (tmp_path / "out" / name).read_bytes() == (base.folder / name).read_bytes()


# --------------------------------------------------------------------------------------------
# The emotion evaluation, written once
# --------------------------------------------------------------------------------------------

def old_label_scores(gold, predicted, labels=EMOTION_LABELS):
    """lm/finetune/emotion.label_scores before issue 22 (its own confusion matrix)."""
    columns = list(labels) + ([OTHER] if any(p not in labels for p in predicted) else [])
    index = {c: i for i, c in enumerate(columns)}
    matrix = [[0] * len(columns) for _ in labels]
    for g, p in zip(gold, predicted):
        matrix[labels.index(g)][index.get(p, index.get(OTHER, 0))] += 1
    acc = sum(g == p for g, p in zip(gold, predicted)) / len(gold)
    return {"accuracy": round(acc, 4), "confusion": {"labels": columns, "matrix": matrix}}


def old_confusion(true, pred, labels):
    """lm/finetune/metrics.confusion before issue 22: a prediction outside `labels` in no column."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for t, p in zip(true, pred):
        if p in index:
            matrix[index[t]][index[p]] += 1
    return {"labels": list(labels), "matrix": matrix}


def test_one_confusion_matrix_gives_both_old_ones():
    rng = random.Random(0)
    for trial in range(200):
        n = rng.randint(1, 30)
        gold = [rng.choice(EMOTION_LABELS) for _ in range(n)]
        answers = list(EMOTION_LABELS) + (["happy!", "", "joy joy"] if trial % 2 else [])
        pred = [rng.choice(answers) for _ in range(n)]
        assert label_scores(gold, pred) == old_label_scores(gold, pred)     # generated answers: (other) column
        if trial % 2 == 0:                                                  # classifiers: predictions are labels
            shown = sorted(set(EMOTION_LABELS))
            assert confusion(gold, pred, shown) == old_confusion(gold, pred, shown)


@pytest.mark.parametrize("with_test", [True, False])
def test_load_emotion_data_is_the_three_splits_the_stages_read(with_test, tmp_path):
    """What emotion_lr and emotion_cnn read themselves before issue 22."""
    d = tmp_path / "data"
    shutil.copytree(EMBEDDED / "emotion", d / "emotion")
    if not with_test:
        (d / "emotion" / "test.jsonl").unlink()
    train, valid = load_emotion(data_file(d, "emotion/train.jsonl")), load_emotion(data_file(d, "emotion/valid.jsonl"))
    split, path = eval_split(d, "emotion")
    evaluation = valid if split == "valid" else load_emotion(path)
    data = load_emotion_data(d)
    assert (data.train, data.valid, data.eval, data.eval_split) == (train, valid, evaluation, split)
    assert data.eval_split == ("test" if with_test else "valid")


def test_train_by_epoch_is_the_cnns_old_loop():
    """emotion_cnn's own per-epoch loop (engine + on_eval) and train_by_epoch: the same accuracies
    after each epoch, the same losses and the same final weights."""
    rows = load_emotion(EMBEDDED / "emotion" / "train.jsonl")[:80]
    held = load_emotion(EMBEDDED / "emotion" / "valid.jsonl")[:24]
    classes = sorted({e.label for e in rows})
    vocab = WordVocab.from_texts(e.text for e in rows)
    train_ex = ClassificationExamples(vocab.encode_batch([e.text for e in rows], 12),
                                      label_ids([e.label for e in rows], classes))
    held = [e for e in held if e.label in classes]
    ids = vocab.encode_batch([e.text for e in held], 12)
    valid_ex = ClassificationExamples(ids, label_ids([e.label for e in held], classes))
    gold = [e.label for e in held]

    def acc(m):
        return accuracy(gold, [classes[i] for i in predict_classes(m, ids).tolist()])

    def fresh():
        torch.manual_seed(0)
        return CNNClassifier(CNNConfig(vocab_size=len(vocab), num_classes=len(classes), emb_dim=8, channels1=8,
                                       channels2=4, hidden=8, seq_len=12))

    epochs, batch = 3, 16
    steps = len(train_ex) // batch
    base = dict(lr=1e-3, schedule="constant", grad_clip=0.0, batch_size=batch, eval_batches=None, log_interval=2,
                device="cpu", seed=0)
    old_model, per_epoch = fresh(), []

    def on_eval(m, step):
        per_epoch.append(acc(m))
        return {"epoch": len(per_epoch), "accuracy": per_epoch[-1]}

    old = train(old_model, train_ex, valid_ex, TrainConfig(**base, max_steps=epochs * steps, eval_interval=steps),
                None, loss_fn=classification_loss, on_eval=on_eval, desc="old")
    new_model = fresh()
    new = train_by_epoch(new_model, train_ex, valid_ex, TrainConfig(**base), epochs, None,
                         loss_fn=classification_loss, score=lambda m: {"accuracy": acc(m)}, desc="new")
    assert [e["accuracy"] for e in new["per_epoch"]] == per_epoch and len(per_epoch) == epochs
    assert [e["epoch"] for e in new["per_epoch"]] == [1, 2, 3]
    assert (new["train_loss"], new["val_loss"], new["steps"]) == (old["train_loss"], old["val_loss"], old["steps"])
    old_state = old_model.state_dict()
    assert all(torch.equal(v, old_state[k]) for k, v in new_model.state_dict().items())
