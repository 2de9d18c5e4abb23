"""run_all.py's pre-flight: every bad input is caught before the first stage, all at once, exit 2.

Also the same checks where a library user meets them (`GPT2.from_pretrained`, `check_tokenizer_fits`)
and the offline advice for `--gpt2 gpt2` (the hub pointed at a closed port on 127.0.0.1).
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import socket
import shutil
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, SHARED_FIXTURES, needs_fixtures
from lm.checkpoints.hf import check_tokenizer_fits, tokenizer_size
from lm.data.download import download_gpt2, download_model
from lm.data.loaders import EMBEDDED_DIR
from lm.errors import CheckpointError, ConfigError, DownloadError
from lm.models.gpt2 import GPT2, GPT2Config
from lm.stages import STAGE_NAMES, RunConfig, data_files, load_stage, needs_gpt2
from lm.stages.preflight import check_data_file, check_model_folder, check_out, needed_files, preflight
from lm.tokenizers.gpt2 import BYTE_ORDER, EOT, GPT2Tokenizer

spec = importlib.util.spec_from_file_location("run_all_pf", REPO / "run_all.py")
run_all = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_all)
for _name in STAGE_NAMES:        # import every stage module now: the timings below are the pre-flight's alone
    load_stage(_name)


# --------------------------------------------------------------------------------------------
# Helpers: a tiny GPT-2 folder, a data dir
# --------------------------------------------------------------------------------------------

def byte_tokenizer() -> GPT2Tokenizer:
    """The smallest GPT-2 tokenizer: the 256 byte tokens and <|endoftext|> (ids 0-256), no merges."""
    encoder = {ch: i for i, ch in enumerate(BYTE_ORDER)}
    encoder[EOT] = 256
    return GPT2Tokenizer(encoder, [], [EOT])


def tiny_gpt2(folder: Path, vocab_size: int = 257) -> Path:
    """A complete GPT-2 folder (config, model.safetensors, vocab.json, merges.txt) with a 257-id tokenizer."""
    torch.manual_seed(0)
    GPT2(GPT2Config(vocab_size=vocab_size, n_positions=16, n_embd=8, n_layer=1, n_head=2)).save_pretrained(folder)
    byte_tokenizer().save(folder)
    return folder


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A data dir with what count_lm, bpe and the small GPT-2 read (copied from the embedded data)."""
    d = tmp_path / "data"
    for rel in ("brown/brown.txt", "news/train.txt", "news/valid.txt", "emotion/train.jsonl"):
        write(d / rel, (EMBEDDED_DIR / rel).read_bytes()[:20_000])
    return d


class NoStages:
    """Stands in for run_stage: any call means a stage started."""
    def __init__(self):
        self.calls = []

    def __call__(self, name, *a, **kw):
        self.calls.append(name)
        raise AssertionError(f"stage {name} ran although the pre-flight should have stopped the run")


@pytest.fixture
def no_stages(monkeypatch) -> NoStages:
    spy = NoStages()
    monkeypatch.setattr(run_all, "run_stage", spy)
    return spy


def run(argv, capsys) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    rc = run_all.main(argv)
    return rc, capsys.readouterr().err, time.perf_counter() - t0


# --------------------------------------------------------------------------------------------
# run_all: each bad input, before any stage, in under 2 s
# --------------------------------------------------------------------------------------------

BAD_INPUTS = {
    # name: (how to make it, extra flags, text expected in the one line)
    "empty data file": (lambda d, t: write(d / "brown/brown.txt", ""), ["--only", "count_lm"], "brown.txt: empty file (needed by count_lm)"),
    "missing data file": (lambda d, t: (d / "news/valid.txt").unlink(), ["--only", "bpe"], "news/valid.txt: missing (needed by bpe)"),
    "whitespace only": (lambda d, t: write(d / "brown/brown.txt", "\n \n\n"), ["--only", "count_lm"], "only whitespace"),
    "gzipped data": (lambda d, t: write(d / "brown/brown.txt", gzip.compress(b"a b c\n")), ["--only", "count_lm"], "gzip-compressed"),
    "not UTF-8": (lambda d, t: write(d / "brown/brown.txt", b"ok\n\xff\xfe bad\n"), ["--only", "count_lm"], "not UTF-8"),
    "small GPT-2's corpus": (lambda d, t: write(d / "news/train.txt", ""), ["--only", "sampling"],
                             "news/train.txt: empty file (needed by sampling)"),
    "missing data dir": (lambda d, t: None, ["--only", "count_lm", "--data-dir", "/nonexistent/data"], "data dir does not exist"),
    "empty --gpt2 folder": (lambda d, t: (t / "empty").mkdir(), ["--only", "sampling", "--gpt2", "{t}/empty"],
                            "config.json is missing"),
    "--gpt2 no such folder": (lambda d, t: None, ["--only", "sampling", "--gpt2", "{t}/nope"], "no such folder, and not a hub name"),
    "--out is a file": (lambda d, t: write(t / "taken", "x"), ["--only", "count_lm", "--out", "{t}/taken"],
                        "an existing file, not a folder"),
    "--out under a file": (lambda d, t: write(t / "taken", "x"), ["--only", "count_lm", "--out", "{t}/taken/run"],
                           "is a file, so the folder cannot be made"),
    "--threads 0": (lambda d, t: None, ["--only", "count_lm", "--threads", "0"], "--threads 0: must be at least 1"),
    "--device": (lambda d, t: None, ["--only", "count_lm", "--device", "nosuchdevice"], "--device 'nosuchdevice'"),
    "--only unknown": (lambda d, t: None, ["--only", "count_lmm"], "unknown stage 'count_lmm' (did you mean count_lm?"),
    "--only empty": (lambda d, t: None, ["--only", ""], "--only '': names no stage"),
    "--skip everything": (lambda d, t: None, ["--skip", ",".join(STAGE_NAMES)], "leave no stage to run"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_each_bad_input_stops_the_run_before_any_stage(case, data_dir, tmp_path, no_stages, capsys):
    make, flags, expected = BAD_INPUTS[case]
    make(data_dir, tmp_path)
    out = tmp_path / "run"
    argv = ["--data-dir", str(data_dir), "--out", str(out), "--quiet"] + [f.format(t=tmp_path) for f in flags]
    rc, err, seconds = run(argv, capsys)
    assert rc == 2
    assert expected in err
    assert no_stages.calls == [] and not out.exists()            # nothing ran, nothing written
    assert "nothing was run" in err and "Traceback" not in err
    assert seconds < 2.0, f"the pre-flight took {seconds:.2f} s"


def test_all_problems_at_once_one_line_each(data_dir, tmp_path, no_stages, capsys):
    write(data_dir / "brown/brown.txt", "")
    (data_dir / "news/valid.txt").unlink()
    (tmp_path / "empty").mkdir()
    write(tmp_path / "taken", "x")
    rc, err, seconds = run(["--data-dir", str(data_dir), "--only", "bpe,count_lm,sampling,nosuch", "--gpt2",
                            str(tmp_path / "empty"), "--out", str(tmp_path / "taken"), "--threads", "0"], capsys)
    assert rc == 2 and no_stages.calls == []
    errors = [ln for ln in err.splitlines() if ln.startswith("run_all.py: error: ")]
    assert len(errors) == 8, err        # threads, out, gpt2 config, gpt2 weights, gpt2 tokenizer, brown, valid, stage name
    for text in ("--threads 0", "--out", "config.json is missing", "no weights found", "no tokenizer files",
                 "brown.txt: empty file", "news/valid.txt: missing (needed by bpe)", "unknown stage 'nosuch'"):
        assert sum(text in e for e in errors) == 1, (text, errors)
    assert "8 problem(s) found before the first stage; nothing was run" in err
    assert seconds < 2.0


def test_a_good_invocation_passes_and_runs(data_dir, tmp_path, capsys):
    gpt2 = tiny_gpt2(tmp_path / "gpt2")
    check = preflight({"count_lm": load_stage("count_lm"), "sampling": load_stage("sampling")}, data_dir,
                      tmp_path / "new" / "run", gpt2=str(gpt2), threads=1)
    assert check.problems == [] and check.model == str(gpt2) and check.data_dir == data_dir
    assert not (tmp_path / "new").exists()                        # the pre-flight creates nothing


# --------------------------------------------------------------------------------------------
# The pieces
# --------------------------------------------------------------------------------------------

def test_check_data_file_cases(tmp_path):
    assert check_data_file(tmp_path / "none.txt") == "missing"
    assert check_data_file(tmp_path) == "not a file"
    assert check_data_file(write(tmp_path / "e.txt", "")) == "empty file"
    assert check_data_file(write(tmp_path / "ok.txt", "one sentence\n")) is None
    assert check_data_file(write(tmp_path / "a.jsonl", '{"text": "hi", "label": "joy"}\n')) is None
    assert check_data_file(write(tmp_path / "b.jsonl", '\n["not", "an", "object"]\n')) == "line 2 is a JSON list, not an object"
    assert check_data_file(write(tmp_path / "c.jsonl", '{"text": \n')).startswith("line 1 is not JSON")
    # a file longer than what is read: only complete lines are judged, the cut one is not
    big = write(tmp_path / "big.jsonl", ('{"text": "' + "x" * 1000 + '"}\n') * 100)
    assert check_data_file(big) is None


def test_needed_files_follow_data_files_and_needs_gpt2():
    mods = {n: load_stage(n) for n in ("count_lm", "sampling")}
    assert needed_files(mods, model_given=False) == {"brown/brown.txt": ["count_lm"], "news/train.txt": ["sampling"],
                                                      "news/valid.txt": ["sampling"]}
    assert needed_files(mods, model_given=True) == {"brown/brown.txt": ["count_lm"]}   # --model: no pretraining


def test_every_implemented_stage_declares_its_inputs():
    """The conventions every stage follows (DATA_FILES, NEEDS_GPT2); the embedded data has every file."""
    for name in STAGE_NAMES:
        module = load_stage(name)
        if module is None:
            continue
        assert isinstance(getattr(module, "DATA_FILES", None), list), f"{name} has no DATA_FILES list"
        assert isinstance(getattr(module, "NEEDS_GPT2", None), bool), f"{name} has no NEEDS_GPT2"
        for rel in data_files(module):
            assert check_data_file(EMBEDDED_DIR / rel) is None, (name, rel)
    assert needs_gpt2(load_stage("sampling")) and not needs_gpt2(load_stage("count_lm"))


def test_check_out(tmp_path):
    assert check_out(tmp_path) == [] and check_out(tmp_path / "a" / "b") == []
    assert not (tmp_path / "a").exists()
    f = write(tmp_path / "f", "x")
    assert "an existing file" in check_out(f)[0]
    assert f"{f} is a file" in check_out(f / "sub")[0]


# --------------------------------------------------------------------------------------------
# Model folders: the pre-flight and from_pretrained
# --------------------------------------------------------------------------------------------

def test_a_good_folder_has_no_problems(tmp_path):
    folder = tiny_gpt2(tmp_path / "g")
    assert check_model_folder(folder) == []
    assert tokenizer_size(folder) == (257, folder / "vocab.json")
    assert GPT2.check_pretrained(folder).vocab_size == 257
    model = GPT2.from_pretrained(folder)
    assert model.config.vocab_size == 257


def test_tokenizer_larger_than_the_vocabulary(tmp_path):
    """The tokenizer has 257 ids, the model 200 rows: a clear error, never torch's IndexError."""
    folder = tiny_gpt2(tmp_path / "g", vocab_size=200)
    problems = check_model_folder(folder)
    assert len(problems) == 1
    assert "the tokenizer has 257 ids (0-256) but config.json's vocab_size is 200" in problems[0]
    assert "does not belong to this model" in problems[0] and str(folder / "vocab.json") in problems[0]
    with pytest.raises(CheckpointError, match="ids 200-256 have no embedding row"):
        GPT2.from_pretrained(folder)
    with pytest.raises(CheckpointError, match="ids 200-256 have no embedding row"):
        GPT2.check_pretrained(folder)                                # the same, without loading weights
    with pytest.raises(CheckpointError, match="vocab_size is 200"):
        check_tokenizer_fits(folder, 200)
    check_tokenizer_fits(folder, 257)                                # equal: fine
    check_tokenizer_fits(folder, 384)                                # a padded embedding (Qwen2): fine


def test_tokenizer_json_counts_added_tokens(tmp_path):
    write(tmp_path / "tokenizer.json", json.dumps({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}},
                                                   "added_tokens": [{"id": 5, "content": "<x>"}]}))
    assert tokenizer_size(tmp_path) == (6, tmp_path / "tokenizer.json")


def test_broken_folders_name_each_problem(tmp_path):
    folder = tiny_gpt2(tmp_path / "g")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])                  # truncated
    (folder / "merges.txt").write_text("#version: 0.2\nnot-a-merge\n")
    problems = check_model_folder(folder)
    assert len(problems) == 2, problems
    assert "model.safetensors" in problems[0] and "truncated" in problems[0]
    assert "merges.txt, line 2" in problems[1]

    folder = tiny_gpt2(tmp_path / "h")
    (folder / "config.json").write_text('{"n_embd": 8, "n_embd": 16}')
    assert "duplicate key 'n_embd'" in check_model_folder(folder)[0]

    folder = tiny_gpt2(tmp_path / "i")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "n_layer": 2}))   # weights have 1 layer
    (problem,) = check_model_folder(folder)
    assert "config.json: num_hidden_layers is 2 but the weights in model.safetensors hold 1 layer (0)" in problem

    folder = tiny_gpt2(tmp_path / "j")
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    assert "model_type 'llama' is not supported here (known: gpt2)" in check_model_folder(folder)[0]


def test_model_folder_check_reads_no_weights(tmp_path, monkeypatch):
    """The pre-flight reads headers only: loading tensors would be a bug (and slow for 124M+)."""
    import lm.checkpoints.hf as hf
    folder = tiny_gpt2(tmp_path / "g")
    monkeypatch.setattr(hf, "load_safetensors", lambda *a, **k: pytest.fail("tensor data was read"))
    assert check_model_folder(folder) == []


# --------------------------------------------------------------------------------------------
# --gpt2 gpt2 offline
# --------------------------------------------------------------------------------------------

def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"            # nothing listens there now: connection refused


@pytest.fixture
def offline_hub(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("LM_HUB_BASE_URL", closed_port_url())
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("LM_CACHE_DIR", str(cache))
    return cache


def test_offline_hub_name_points_to_a_folder_and_leaves_no_folder(offline_hub):
    with pytest.raises(DownloadError) as e:
        download_gpt2("gpt2", timeout=3)
    msg = str(e.value)
    assert "--gpt2 FOLDER" in msg and "config.json, model.safetensors, vocab.json, merges.txt" in msg
    assert "--data-dir" not in msg
    assert not offline_hub.exists()                                   # no empty cache folder behind


def test_offline_hub_name_in_run_all_is_a_preflight_problem(offline_hub, data_dir, tmp_path, no_stages, capsys):
    rc, err, _ = run(["--data-dir", str(data_dir), "--only", "sampling", "--gpt2", "gpt2",
                      "--out", str(tmp_path / "run")], capsys)
    assert rc == 2 and no_stages.calls == []
    (line,) = [ln for ln in err.splitlines() if ln.startswith("run_all.py: error: ")]
    assert line.startswith("run_all.py: error: --model gpt2: ") and "--gpt2 FOLDER" in line
    assert not offline_hub.exists()


def test_hub_name_not_fetched_when_no_stage_uses_it(offline_hub, data_dir, tmp_path):
    check = preflight({"count_lm": load_stage("count_lm")}, data_dir, tmp_path / "run", gpt2="gpt2")
    assert check.problems == [] and not offline_hub.exists()



def test_offline_model_name_points_to_a_folder_and_leaves_no_folder(offline_hub):
    with pytest.raises(DownloadError) as e:
        download_model("Qwen/Qwen2.5-0.5B-Instruct", timeout=3)
    assert "--model FOLDER" in str(e.value) and "--data-dir" not in str(e.value)
    assert not offline_hub.exists()


@needs_fixtures
def test_model_flag_takes_a_qwen2_folder_and_names_what_is_wrong(tmp_path):
    good = SHARED_FIXTURES / "qwen2_lm_tied"
    assert check_model_folder(good, "--model", None) == []
    bad = tmp_path / "qwen"
    shutil.copytree(good, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["num_hidden_layers"] = 3                                      # the weights hold 2 layers
    (bad / "config.json").write_text(json.dumps(cfg))
    (line,) = check_model_folder(bad, "--model", None)
    assert line.startswith("--model: ") and "config.json" in line and "num_hidden_layers is 3" in line
    check = preflight({}, None, tmp_path / "run", model=str(tmp_path / "nowhere"))
    assert check.problems and "not a hub name" in check.problems[0]


def tiny_qwen2(folder: Path) -> Path:
    """A complete, valid Qwen2 folder (config with model_type qwen2, weights, a 257-id tokenizer)."""
    from lm.models.qwen2 import Qwen2, Qwen2Config
    torch.manual_seed(0)
    Qwen2(Qwen2Config(vocab_size=257, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, bos_token_id=None, eos_token_id=256)).save_pretrained(folder)
    byte_tokenizer().save(folder)
    return folder


@pytest.mark.parametrize("flag", ["--gpt2", "--model"])
def test_a_qwen2_folder_for_a_stage_that_builds_gpt2_stops_the_run_before_any_stage(flag, data_dir, tmp_path,
                                                                                     no_stages, capsys):
    """sampling builds GPT-2: a valid Qwen2 folder given to it (by either name of the flag) is a
    pre-flight problem, exit 2 with nothing run, not a failure in the middle of a stage."""
    qwen = tiny_qwen2(tmp_path / "qwen")
    assert check_model_folder(qwen, "--model", None) == []                 # a good folder, for any family
    out = tmp_path / "run"
    rc, err, _ = run(["--data-dir", str(data_dir), "--only", "sampling", flag, str(qwen), "--out", str(out),
                      "--quiet"], capsys)
    assert rc == 2 and no_stages.calls == [] and not out.exists()
    assert (f"--model {qwen}: config.json: model_type 'qwen2' is not supported here (known: gpt2); "
            "sampling builds GPT-2") in err
    assert "nothing was run" in err and "Traceback" not in err


def test_gpt2_is_another_name_for_model(data_dir, tmp_path, no_stages, capsys):
    """--gpt2 X and --model X: the same argument, RunConfig and pre-flight result; the two names with
    different folders are an argparse error (exit 2), not silently the last one."""
    gpt2, qwen = tiny_gpt2(tmp_path / "gpt2"), tiny_qwen2(tmp_path / "qwen")
    parser = run_all.build_parser()
    assert vars(parser.parse_args(["--gpt2", str(gpt2)])) == vars(parser.parse_args(["--model", str(gpt2)]))
    assert parser.parse_args(["--gpt2", str(gpt2), "--model", str(gpt2)]).model == str(gpt2)
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--gpt2", str(gpt2), "--model", str(qwen)])
    assert e.value.code == 2 and "one flag" in capsys.readouterr().err
    assert RunConfig(gpt2=str(gpt2), seed=3) == RunConfig(model=str(gpt2), seed=3)
    with pytest.raises(ConfigError, match="two names for one setting"):
        RunConfig(gpt2=str(gpt2), model=str(qwen))
    (data_dir / "emotion" / "valid.jsonl").write_bytes((EMBEDDED_DIR / "emotion" / "valid.jsonl").read_bytes())
    modules = {n: load_stage(n) for n in ("count_lm", "sampling", "emotion_sft")}
    for folder in (gpt2, qwen, tmp_path / "nowhere"):
        by_gpt2 = preflight(modules, data_dir, tmp_path / "run", gpt2=str(folder))
        assert by_gpt2 == preflight(modules, data_dir, tmp_path / "run", model=str(folder))
    assert preflight(modules, data_dir, tmp_path / "run", gpt2=str(gpt2)).problems == []
    both = preflight(modules, data_dir, tmp_path / "run", gpt2=str(gpt2), model=str(qwen))
    assert any("--gpt2 is another name for --model" in p for p in both.problems)


def test_a_qwen2_folder_passes_when_every_stage_takes_any_family(data_dir, tmp_path):
    qwen = tiny_qwen2(tmp_path / "qwen")
    (data_dir / "emotion" / "valid.jsonl").write_bytes((EMBEDDED_DIR / "emotion" / "valid.jsonl").read_bytes())
    modules = {n: load_stage(n) for n in ("emotion_sft", "emotion_classifier")}
    check = preflight(modules, data_dir, tmp_path / "run", model=str(qwen))
    assert check.problems == [] and check.model == str(qwen)
    modules["doc_labeling"] = load_stage("doc_labeling")          # builds GPT-2: named in the one line
    (line,) = [p for p in preflight(modules, data_dir, tmp_path / "run", model=str(qwen)).problems
                if "model_type" in p]
    assert line.endswith("(known: gpt2); doc_labeling builds GPT-2")
