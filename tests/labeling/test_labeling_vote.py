"""Labelling II: the vote against the best single labeller, the labelling model's instruction data,
the generator's compact prompt and its replies (scripted), the toy task's difficulty."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import tiny_gpt2
from lm.data.loaders import Abstract, EMBEDDED_DIR
from lm.errors import DataError
from lm.labeling.answers import AnswerCache
from lm.labeling.candidates import label_cosines
from lm.labeling.documents import load_corpus
from lm.labeling.instruct import (INSTRUCT, LabelTuneConfig, instruction_examples, load_instruct, reply,
                                  training_candidates, tune_labeller)
from lm.labeling.label_corpus import label_corpus
from lm.labeling.labeller import Labeller
from lm.labeling.lm_generate import LMGenerator, compact_parts, compact_prompt
from lm.labeling.lm_score import LMScorer
from lm.labeling.prompt import build_prompt
from lm.labeling.taxonomy import load_taxonomy
from lm.labeling.tfidf import TfidfVectorizer
from lm.models.gpt2 import GPT2, GPT2Config

from test_labeling import TOY_ROWS, write_tsv


class Scripted(Labeller):
    """Answers from a dict {doc id: answer}."""

    def __init__(self, name, answers):
        self.name, self.answers = name, answers

    def label(self, document, candidates):
        return self.answers[document.id]


def test_vote_metrics_majority_rule_and_best_single_on_the_same_documents(tmp_path):
    tax = load_taxonomy(write_tsv(tmp_path / "t.tsv", TOY_ROWS))
    docs = [Abstract(str(i), "t", "a") for i in range(6)]
    truth = {"0": "toy:1100", "1": "toy:1100", "2": "toy:1200", "3": "toy:1200", "4": "toy:2100", "5": "toy:2100"}
    a, b, c = "toy:1100", "toy:1200", "toy:2100"
    # each labeller wrong on a different document; 4 and 5: all three disagree / two agree on a wrong ID
    x = Scripted("x", {"0": b, "1": a, "2": b, "3": b, "4": a, "5": a})
    y = Scripted("y", {"0": a, "1": c, "2": b, "3": b, "4": b, "5": a})
    z = Scripted("z", {"0": a, "1": a, "2": c, "3": b, "4": c, "5": b})
    scores = np.zeros((6, len(tax.qcodes)))
    run = label_corpus(docs, tax, [x, y, z], scores, 3, AnswerCache(None), truth=truth, quiet=True)
    assert run.min_votes == 2                                     # more than half of 3
    assert run.labels == {"0": a, "1": a, "2": b, "3": b, "4": None, "5": a}
    m = run.metrics
    assert m["coverage"] == round(5 / 6, 4)
    assert m["ensemble_accuracy_vs_truth"] == 0.8                 # 0-3 right, 5 wrong
    # on the five labelled documents: x right on 1, 2, 3 (3/5), y on 0, 2, 3 (3/5), z on 0, 1, 3 (3/5)
    assert m["best_single_accuracy_vs_truth"] == 0.6
    assert m["labellers"]["x"]["accuracy_on_labelled"] == 0.6
    assert m["labellers"]["x"]["accuracy_vs_truth"] == round(3 / 6, 4)     # on all six
    assert m["by_min_votes"]["3"] == {"coverage": round(1 / 6, 4), "accuracy_vs_truth": 1.0}   # only doc 3
    assert m["by_min_votes"]["1"]["coverage"] == round(5 / 6, 4)          # doc 4: a three-way tie


def test_load_instruct_refuses_evaluated_documents_and_unknown_leaves(tmp_path):
    tax = load_taxonomy(write_tsv(tmp_path / "t.tsv", TOY_ROWS))
    path = tmp_path / "instruct.jsonl"
    rows = [{"id": "i1", "title": "Bread", "abstract": "We bake.", "qcode": "toy:1100"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs, truth = load_instruct(path, tax, [Abstract("e1", "Cheese", "Wheels.")])
    assert [d.id for d in docs] == ["i1"] and truth == {"i1": "toy:1100"}
    with pytest.raises(DataError, match="line 1: document 'i1' is also a document to label"):
        load_instruct(path, tax, [Abstract("e1", "Bread", "We bake.")])      # same text, other id
    with pytest.raises(DataError, match="also a document to label"):
        load_instruct(path, tax, [Abstract("i1", "x", "y")])                 # same id
    path.write_text(json.dumps({**rows[0], "qcode": "toy:1000"}) + "\n")     # not a leaf
    with pytest.raises(DataError, match="not a leaf"):
        load_instruct(path, tax)


def test_embedded_instruction_data_is_disjoint_from_the_labelled_documents():
    docs, tax, truth = load_corpus(EMBEDDED_DIR)
    ex, ex_truth = load_instruct(EMBEDDED_DIR / INSTRUCT, tax, docs)    # raises on any overlap
    assert len(ex) >= 1000 and set(ex_truth.values()) == set(tax.qcodes)


@pytest.fixture(scope="module")
def tiny_gen():
    lines = [f"Title: bread {i}\nAbstract: we bake loaves and rolls; toy:1100 toy:1200 floods" for i in range(50)]
    return tiny_gpt2(lines, n_positions=512)


def test_compact_prompt_when_the_book_prompt_does_not_fit(tiny_gen, tmp_path):
    model, tok = tiny_gen
    tax = load_taxonomy(write_tsv(tmp_path / "t.tsv", TOY_ROWS))
    doc, cands = Abstract("1", "Bread", "We bake."), ["toy:1100", "toy:1200"]
    gen = LMGenerator(model, tok, tax, max_new_tokens=8)
    ids = gen.prompt_ids(doc, cands)
    compact = tok.encode_ordinary(compact_prompt(doc, cands, tax))
    assert len(tok.encode_ordinary(build_prompt(doc, cands, tax))) > 512 - 8 >= len(compact)
    assert ids == compact                                    # the whole compact prompt, nothing cut
    text = tok.decode(ids)
    assert "Title: Bread" in text and "ID: toy:1200, PATH: food > cheese" in text and text.endswith("category.\nID:")
    long_doc = Abstract("2", "Bread", "We bake loaves and rolls. " * 80)
    ids = gen.prompt_ids(long_doc, cands)
    head, abstract, tail = (tok.encode_ordinary(t) for t in compact_parts(long_doc, cands, tax))
    assert len(ids) == 512 - 8 and ids[:len(head)] == head and ids[-len(tail):] == tail   # the abstract lost its end
    assert ids == head + abstract[:512 - 8 - len(head) - len(tail)] + tail
    roomy = LMGenerator(model, tok, tax, max_new_tokens=8)
    roomy.window = 10_000                                    # a window the book's prompt fits: sent as it is
    assert roomy.prompt_ids(doc, cands) == tok.encode_ordinary(build_prompt(doc, cands, tax))


def test_generator_takes_the_id_after_the_topic_name(tiny_gen, tmp_path, monkeypatch):
    """The labelling model names the topic, then the ID (`reply`); the book's last-match rule."""
    model, tok = tiny_gen
    tax = load_taxonomy(write_tsv(tmp_path / "t.tsv", TOY_ROWS))
    assert reply(tax, "toy:1200") == " cheese: toy:1200"
    gen = LMGenerator(model, tok, tax, attempts=2, max_new_tokens=8)
    docs = [Abstract(str(i), "t", "a") for i in range(4)]
    cands = [["toy:1100", "toy:1200"]] * 4
    script = {0: [" cheese: toy:1200", " floods: toy:2100", " bread: toy:1100 or toy:1200", " bread: toy:11"],
              1: [" bread: toy:1100", " floods: toy:2100"]}
    monkeypatch.setattr(gen, "replies", lambda prompts, attempt: script[attempt][:len(prompts)])
    got = dict(gen.label_many(docs, cands))
    # doc 1: toy:2100 is not a candidate (retried, then valid); doc 2: the last ID; doc 3: no whole ID twice
    assert got == {0: "toy:1200", 1: "toy:1100", 2: "toy:1200", 3: None}


def test_instruction_examples_train_on_the_reply_only(tiny_gen, tmp_path):
    model, tok = tiny_gen
    tax = load_taxonomy(write_tsv(tmp_path / "t.tsv", TOY_ROWS))
    docs = [Abstract("a", "Bread", "We bake loaves."), Abstract("b", "Floods", "The river rose.")]
    truth = {"a": "toy:1100", "b": "toy:2100"}
    cands = training_candidates(docs, truth, tax, 2, seed=0)
    assert all(truth[d.id] in c and len(c) == 2 for d, c in zip(docs, cands))
    gen, sc = LMGenerator(model, tok, tax, max_new_tokens=8), LMScorer(model, tok, tax)
    ex = instruction_examples(gen, docs, truth, cands, tok.eot_id, scorer=sc)
    assert len(ex) == 4                                      # per document: a generation, then a scoring example
    batch = ex.collate([0, 2])
    for row, d, c in zip((0, 1), docs, cands):
        targets = [t for t in batch["targets"][row].tolist() if t != -100]
        answer = tok.encode_ordinary(reply(tax, truth[d.id])) + [tok.eot_id]
        assert targets == answer                                     # the prompt is never a target
        assert batch["input_ids"][row].tolist()[:len(gen.prompt_ids(d, c))] == gen.prompt_ids(d, c)
    scoring = ex.collate([1])
    assert [t for t in scoring["targets"][0].tolist() if t != -100] == sc.candidate_ids("toy:1100")


def test_tune_labeller_learns_and_is_reused(tiny_gen, tmp_path):
    """A few steps on two documents lower the reply's loss; a finished folder is not trained again."""
    model, tok = tiny_gen
    tax = load_taxonomy(write_tsv(tmp_path / "t.tsv", TOY_ROWS))
    base = tmp_path / "base"
    model.save_pretrained(base)
    tok.save(base)
    docs = [Abstract("a", "Bread", "We bake loaves."), Abstract("b", "Floods", "The river rose.")]
    truth = {"a": "toy:1100", "b": "toy:2100"}
    cfg = LabelTuneConfig(epochs=15, batch_size=2, lr=1e-2, warmup_steps=0, score_examples=False)
    out = tune_labeller(base, docs, truth, tax, 2, tmp_path / "labeller", cfg)
    info = json.loads((out / "labeller.json").read_text())
    assert info["documents"] == 2 and info["steps"] == 15
    log = [json.loads(x) for x in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < 0.7 * log[0]["loss"]
    stamp = (out / "labeller.json").stat().st_mtime_ns
    assert tune_labeller(base, docs, truth, tax, 2, tmp_path / "labeller", cfg) == out
    assert (out / "labeller.json").stat().st_mtime_ns == stamp


def test_embedded_toy_task_needs_more_than_word_overlap():
    """TF-IDF nearest label is far from perfect on the toy abstracts, its top 3 nearly always hold the truth."""
    docs, tax, truth = load_corpus(EMBEDDED_DIR)
    scores = label_cosines(TfidfVectorizer(), docs, tax)                     # (N, L)
    top = np.argsort(-scores, axis=1, kind="stable")
    true_idx = np.array([tax.index(truth[d.id]) for d in docs])
    assert (top[:, 0] == true_idx).mean() <= 0.85
    assert (top[:, :3] == true_idx[:, None]).any(axis=1).mean() >= 0.95


def test_extend_positions_interpolates_the_position_embedding(tiny_gen):
    from lm.labeling.instruct import extend_positions
    _, tok = tiny_gen
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=tok.vocab_size, n_positions=4, n_embd=8, n_layer=1, n_head=2))
    old = model.transformer.wpe.weight.detach().clone()                        # (4, 8)
    assert extend_positions(model, 4) is model and model.config.n_positions == 4
    extend_positions(model, 7)                                                  # new i <- old i * 3 / 6
    new = model.transformer.wpe.weight.detach()
    assert new.shape == (7, 8) and model.config.n_positions == 7
    assert torch.allclose(new[0], old[0]) and torch.allclose(new[6], old[3]) and torch.allclose(new[2], old[1])
    assert torch.allclose(new[1], (old[0] + old[1]) / 2, atol=1e-6)
    assert model(torch.zeros((1, 7), dtype=torch.long)).shape == (1, 7, tok.vocab_size)
