"""Stage doc_labeling and `python -m lm.labeling` on a tiny data dir with a tiny GPT-2."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import SHARED_FIXTURES, needs_fixtures
from lm.labeling.__main__ import main as labeling_main
from lm.models.gpt2 import GPT2, GPT2Config
from lm.stages import RunConfig, run_stage
from lm.tokenizers.gpt2 import GPT2Tokenizer

LEAVES = {  # qcode: (path, definition, words only its abstracts use)
    "tt:0110": ("farm > bread", "Loaves, ovens, rolls, dough", ["loaves", "ovens", "rolls", "dough"]),
    "tt:0120": ("farm > cheese", "Cheese, wheels, curds, rennet", ["cheese", "wheels", "curds", "rennet"]),
    "tt:0210": ("sky > floods", "Floods, rivers, banks, levees", ["floods", "rivers", "banks", "levees"]),
    "tt:0220": ("sky > snow", "Snow, frost, winters, sledges", ["snow", "frost", "winters", "sledges"]),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("labeling")
    data = root / "data"
    (data / "arxiv").mkdir(parents=True)
    (data / "iptc").mkdir()
    rows = ["qcode\tlevel\tpath\tdefinition\tis_leaf", "tt:0100\t1\tfarm\tFarming\t0", "tt:0200\t1\tsky\tWeather\t0"]
    rows += [f"{q}\t2\t{p}\t{d}\t1" for q, (p, d, _) in LEAVES.items()]
    (data / "iptc" / "mediatopic.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    docs, truth, texts = [], [], []
    for n, (q, (_, _, words)) in enumerate(LEAVES.items()):
        for i in range(6):
            doc_id = f"{n}.{i}"
            abstract = f"We study {words[i % 4]} with {words[(i + 1) % 4]} in town {i}. The {words[(i + 2) % 4]} matter."
            docs.append({"id": doc_id, "title": f"On {words[i % 4]}", "abstract": abstract})
            truth.append({"id": doc_id, "qcode": q})
            texts.append(abstract)
    (data / "arxiv" / "abstracts.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (data / "arxiv" / "labels.jsonl").write_text("".join(json.dumps(t) + "\n" for t in truth))
    tok = GPT2Tokenizer.train(texts + rows, 300)
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=tok.vocab_size, n_positions=128, n_embd=16, n_layer=1, n_head=2,
                            eos_token_id=tok.eot_id))
    model.save_pretrained(root / "gpt2")
    tok.save(root / "gpt2")
    return data, root / "gpt2"


def test_stage_on_tiny_data_and_resume(tiny, tmp_path):
    data, gpt2 = tiny
    cfg = RunConfig(quick=True, device="cpu", gpt2=str(gpt2), quiet=True, threads=1)
    m = run_stage("doc_labeling", cfg, data, tmp_path / "doc_labeling")
    assert m["documents"] == 24 and m["k"] == 2 and m["min_votes"] == 2          # 3 labellers: more than half
    assert m["labelling_model"] == {"tuned": False, "why": "--model weights are used as they are"}
    assert m["candidate_recall"] == 1.0 and m["candidate_embedder_best"] == "tfidf"
    assert m["labellers"]["tfidf"]["coverage"] == 1.0 and m["labellers"]["tfidf"]["accuracy_vs_truth"] == 1.0
    assert set(m["labellers"]) == {"tfidf", "lm_score", "lm_generate"}
    assert m["lm_generate_valid"] == m["labellers"]["lm_generate"]["coverage"]
    assert 0 <= m["coverage"] <= 1 and m["ensemble_accuracy_vs_truth"] == 1.0       # tfidf + lm_score agree: right
    assert m["best_single_accuracy_vs_truth"] == 1.0 and m["best_single_labeller"] == "tfidf"
    assert len(m["pairs"]) == 3 and -1 <= m["kappa"] <= 1
    assert m["by_min_votes"]["2"]["coverage"] == m["coverage"]
    assert m["by_min_votes"]["1"]["coverage"] >= m["coverage"] >= m["by_min_votes"]["3"]["coverage"]
    # the classifier: trained on the labelled training documents, scored on the held-out ones
    labels = json.loads((tmp_path / "doc_labeling" / "labels.json").read_text())
    assert len(labels["train"]) == m["train_labelled"] and len(labels["test"]) == m["test_labelled"] > 0
    assert set(m["classifiers"]) == {"bow_lr", "gpt2_head"} and m["classifier"] == "gpt2_head"
    head = m["classifiers"]["gpt2_head"]
    assert m["accuracy_vs_labels"] == m["accuracy"] == head["accuracy_vs_labels"]
    assert m["accuracy_per_epoch"] == head["accuracy_per_epoch"] and len(head["accuracy_per_epoch"]) == 6
    assert m["accuracy_per_epoch"][-1] == pytest.approx(m["accuracy_vs_labels"], abs=1e-4)
    for c in m["classifiers"].values():
        assert 0 <= c["accuracy_vs_labels"] <= 1 and 0 <= c["accuracy_vs_truth"] <= 1
        assert sum(map(sum, c["confusion"]["matrix"])) == m["test_labelled"]
        assert len(c["confusion"]["labels"]) == m["classes"]
    assert (tmp_path / "doc_labeling" / "gpt2_head" / "metrics.jsonl").is_file()     # the training curve
    answers = (tmp_path / "doc_labeling" / "answers.jsonl").read_text().splitlines()
    assert len(answers) == 24 * 3
    again = run_stage("doc_labeling", cfg, data, tmp_path / "doc_labeling")   # everything from the cache
    assert (tmp_path / "doc_labeling" / "answers.jsonl").read_text().splitlines() == answers
    for key in ("coverage", "agreement", "kappa", "labellers", "by_min_votes", "accuracy_vs_labels"):
        assert again.get(key) == m.get(key)
    for name, c in m["classifiers"].items():                                 # seeded: the same classifiers
        assert {k: v for k, v in again["classifiers"][name].items() if k != "seconds"} == \
            {k: v for k, v in c.items() if k != "seconds"}
    assert again["seconds_per_labeller"] == {}                                 # nobody was asked


def test_cli_local_labellers(tiny, tmp_path, capsys):
    data, gpt2 = tiny
    out = tmp_path / "out"
    rc = labeling_main(["--data-dir", str(data), "--out", str(out), "--labellers", "tfidf,lm_score",
                        "--gpt2", str(gpt2), "--k", "3", "--min-votes", "1", "--min-docs", "7", "--quiet"])
    assert rc == 0
    labels = [json.loads(x) for x in (out / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == 24 and set(labels[0]["votes"]) == {"tfidf", "lm_score"}
    s = json.loads((out / "summary.json").read_text())
    assert s["min_votes"] == 1 and s["k"] == 3 and s["labellers"]["tfidf"]["accuracy_vs_truth"] == 1.0
    # every leaf has 6 documents, fewer than --min-docs 7: all folded; with min_votes 1 a tie gives no label
    assert {x["folded"] for x in labels if x["qcode"]} == {"Other"}
    assert "documents labelled" in capsys.readouterr().out


def test_cli_errors_are_one_line(tiny, tmp_path, capsys):
    data, _ = tiny
    assert labeling_main(["--data-dir", str(data), "--out", str(tmp_path), "--labellers", "lm_score"]) == 2
    assert "--gpt2 FOLDER" in capsys.readouterr().err
    assert labeling_main(["--data-dir", str(data), "--out", str(tmp_path), "--labellers", "nope"]) == 2
    assert "unknown local labeller" in capsys.readouterr().err
    assert labeling_main(["--data-dir", str(data), "--out", str(tmp_path), "--labellers", "none",
                          "--models", "m"]) == 2
    assert "--models needs --url" in capsys.readouterr().err


@needs_fixtures
def test_cli_chat_model(tiny, tmp_path):
    data, _ = tiny
    out = tmp_path / "out"
    assert labeling_main(["--data-dir", str(data), "--out", str(out), "--labellers", "tfidf", "--k", "2", "--quiet",
                          "--chat-model", str(SHARED_FIXTURES / "qwen2_lm_tied"), "--attempts", "1"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["labellers_used"] == ["tfidf", "chat:qwen2_lm_tied"] and s["min_votes"] == 2
    assert 0 <= s["labellers"]["chat:qwen2_lm_tied"]["coverage"] <= 1


def test_stage_without_labels_says_so(tiny, tmp_path):
    """lm_generate (a random tiny model) never answers, so 2 of 2 votes never happen: no classifier."""
    from lm.stages import doc_labeling
    data, gpt2 = tiny
    s = doc_labeling.Settings(labellers=["tfidf", "lm_generate"])
    m = doc_labeling.run(RunConfig(device="cpu", gpt2=str(gpt2), quiet=True, run_dir=tmp_path), s, data, tmp_path)
    assert m["coverage"] == 0.0 and m["train_labelled"] == 0 and "too few for a classifier" in m["note"]
    assert "accuracy_vs_labels" not in m
