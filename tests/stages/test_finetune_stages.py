"""The GPT-2 fine-tuning stages end to end on a tiny data dir and a tiny base model (seconds each)."""
import json
import shutil
from dataclasses import replace

import pytest
import torch

from conftest import REPO
from lm.chat import load_engine
from lm.errors import DataError
from lm.finetune.emotion import label_scores, load_emotion_data
from lm.finetune.lora import load_adapter, lora_layers
from lm.finetune.sft import IM_END, generate_completions, instruct_pair
from lm.inference.engine import Settings
from lm.models.gpt2 import GPT2, GPT2Config, GPT2ForSequenceClassification
from lm.stages import RunConfig, for_base, load_stage
from lm.stages.gpt2_pretrain import choose_base
from lm.tokenizers.gpt2 import GPT2Tokenizer

EMBEDDED = REPO / "data"


def head(src, dst, n):
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("".join(src.read_text().splitlines(keepends=True)[:n]))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A data dir with a few lines of each file, and a run dir holding a tiny 'pretrained' GPT-2."""
    root = tmp_path_factory.mktemp("ft")
    data = root / "data"
    for split, n in (("train", 64), ("valid", 16), ("test", 16)):
        head(EMBEDDED / "emotion" / f"{split}.jsonl", data / "emotion" / f"{split}.jsonl", n)
    head(EMBEDDED / "instruct" / "instruct.jsonl", data / "instruct" / "instruct.jsonl", 40)
    texts = [json.loads(x)["text"] for x in (data / "emotion" / "train.jsonl").read_text().splitlines()]
    tok = GPT2Tokenizer.train(texts * 2 + ["Predict the emotion <|im_start|> assistant"], 300)
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=tok.vocab_size, n_positions=128, n_embd=32, n_layer=1, n_head=2,
                            embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, bos_token_id=tok.eot_id,
                            eos_token_id=tok.eot_id))
    folder = root / "run" / "pretrained" / "news"
    model.save_pretrained(folder)
    tok.save(folder)
    (folder / "pretrain.json").write_text(json.dumps({"steps": 0, "tokens": 0, "parameters": model.num_parameters()}))
    shutil.copytree(folder, folder.with_name("emotion"))   # the emotion stages' base: the same tiny model
    return data, root / "run"


def run(name, tiny_run, out=None, data=None, **settings):
    module = load_stage(name)
    data_dir, run_dir = tiny_run
    s = replace(module.Settings(), **settings)
    out = run_dir / (out or name)
    out.mkdir(parents=True, exist_ok=True)
    return module.run(RunConfig(quick=True, run_dir=run_dir), s, data or data_dir, out), out


FAST = dict(epochs=2, batch_size=8, warmup_steps=2, val_batches=1, eval_batch=7)


def check_emotion_metrics(m, n_eval=16, epochs=2):
    assert m["eval_split"] == "test" and 0 <= m["accuracy"] <= 1 and 0 <= m["accuracy_valid"] <= 1
    assert len(m["accuracy_per_epoch"]) == epochs and m["accuracy_per_epoch"][-1] == m["accuracy"]
    assert len(m["loss_per_epoch"]) == epochs and m["steps"] == epochs * (64 // 8)
    conf = m["confusion"]
    assert conf["labels"][:6] == ["sadness", "joy", "love", "anger", "fear", "surprise"]
    assert sum(map(sum, conf["matrix"])) == n_eval
    assert sum(conf["matrix"][i][i] for i in range(6)) == round(m["accuracy"] * n_eval)
    assert m["base_model"].startswith("small GPT-2 pretrained here")
    assert m["base"]["parameters"] > 0 and m["base"]["steps"] == 0     # size and budget of the base, from pretrain.json


def test_emotion_sft_stage(tiny_run):
    m, out = run("emotion_sft", tiny_run, **FAST, max_new_tokens=4)
    check_emotion_metrics(m)
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["accuracy"] for r in log if "val_loss" in r] == m["accuracy_per_epoch"]


def test_emotion_lora_stage_saves_a_peft_adapter(tiny_run):
    m, out = run("emotion_lora", tiny_run, **FAST, max_new_tokens=4, r=4, alpha=8)
    check_emotion_metrics(m)
    assert m["trainable_parameters"] < m["total_parameters"] / 5
    base = GPT2.from_pretrained(out / "base")                    # the small base, output layer untied
    assert base.lm_head is not None
    load_adapter(base, out / "adapter")
    assert sorted(lora_layers(base)) == ["lm_head", "transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj",
                                         "transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj",
                                         "transformer.wte"]
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        out / "base")


def test_emotion_classifier_stage_saves_labels(tiny_run):
    m, out = run("emotion_classifier", tiny_run, **FAST)
    check_emotion_metrics(m)
    model = GPT2ForSequenceClassification.from_pretrained(out / "model")
    assert json.loads((out / "model" / "config.json").read_text())["id2label"]["1"] == "joy"
    assert model.config.num_labels == 6


def test_without_a_test_split_the_report_is_on_valid(tiny_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_run[0], data)
    (data / "emotion" / "test.jsonl").unlink()
    m, _ = run("emotion_classifier", tiny_run, out="cls_valid", data=data, **FAST)
    assert m["eval_split"] == "valid" and m["accuracy"] == m["accuracy_valid"]


def test_instruct_sft_stage(tiny_run):
    m, out = run("instruct_sft", tiny_run, epochs=2, batch_size=6, warmup_steps=2, val_batches=1, eval_batch=3,
                 max_new_tokens=6, samples=2)
    assert m["train_examples"] == 36 and m["test_examples"] == 4              # the book's 90/10 split
    assert 0 <= m["exact_match"] <= 1 and len(m["loss_per_epoch"]) == 2 and len(m["samples"]) == 2
    assert (out / "metrics.jsonl").is_file()
    engine = load_engine(m["model_dir"])              # saved where `python -m lm.chat` takes it
    assert m["model_dir"] == str(out / "model") and engine.format == "book"
    tok = engine.tokenizer                              # the chat asks as the stage's evaluation asks
    for question in ("Hi", "What is 2 + 2?"):
        stage = generate_completions(engine.model, tok, [instruct_pair(question, "").prompt], 6, eos_id=tok.eot_id,
                                     stop_strings=[IM_END])[0]
        ids = engine.encode_chat([{"role": "user", "content": question}])
        assert ids == tok.encode(instruct_pair(question, "").prompt)          # the prompt it was trained on
        assert engine.reply(ids, Settings(max_new_tokens=6)).run().text.strip() == stage.strip()


def test_bad_emotion_files_are_one_clear_error(tmp_path):
    d = tmp_path / "emotion"
    d.mkdir()
    (d / "valid.jsonl").write_text('{"text": "i am glad", "label": "joy"}\n')
    (d / "train.jsonl").write_text('{"text": "i am glad", "label": "joy"}\n{"text": "  ", "label": "joy"}\n')
    with pytest.raises(DataError, match=r"train.jsonl, line 2: empty text"):
        load_emotion_data(tmp_path)
    (d / "train.jsonl").write_text('{"text": "i am glad", "label": "happy"}\n')
    with pytest.raises(DataError, match=r"train.jsonl, line 1: unknown emotion label 'happy'"):
        load_emotion_data(tmp_path)


def test_label_scores_by_hand():
    s = label_scores(["joy", "joy", "fear", "sadness"], ["joy", "fear", "fear", "happy!"])
    assert s["accuracy"] == 0.5
    assert s["confusion"]["labels"][-1] == "(other)"
    m = s["confusion"]["matrix"]
    assert m[1][1] == 1 and m[1][4] == 1 and m[4][4] == 1 and m[0][6] == 1 and sum(map(sum, m)) == 4


def test_real_weights_flag_uses_the_books_settings(tiny_run):
    """--gpt2 FOLDER (another name for --model): that folder is the base, trained with the book's
    constant rate and no clipping."""
    module = load_stage("emotion_sft")
    data_dir, run_dir = tiny_run
    folder = run_dir / "pretrained" / "news"
    s = replace(module.Settings(), real_epochs=1, real_batch_size=8, val_batches=1, eval_batch=8, max_new_tokens=3)
    cfg = RunConfig(gpt2=str(folder), run_dir=run_dir)
    assert cfg == RunConfig(model=str(folder), run_dir=run_dir)
    base = choose_base(cfg, data_dir, "emotion")
    assert base.real and base.folder == folder and base.budget is None
    book = for_base(s, base.real)
    assert book.epochs == 1 and book.max_train == 1000 and book.batch_size == 8
    train = book.train_config(base.real, cfg)
    assert (train.lr, train.schedule, train.grad_clip, train.warmup_steps) == (5e-5, "constant", 0.0, 0)
    out = run_dir / "real"
    m = module.run(cfg, s, data_dir, out)
    assert m["base_model"] == f"gpt2 weights from --model {folder}" and len(m["accuracy_per_epoch"]) == 1
    lrs = {json.loads(x)["lr"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"lr"' in x}
    assert lrs == {5e-5}
