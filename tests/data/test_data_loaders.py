"""Typed loaders on good and bad files, the data-dir choice, and the book's shuffle/split protocol."""
import json
import random

import pytest

from conftest import SHARED_DATA, needs_shared
from lm.errors import DataError
from lm.data.loaders import (EMBEDDED_DIR, EMOTION_LABELS, LAYOUT, book_shuffle, book_split, load_emotion, load_gsm8k,
                             load_instruct, load_iptc, load_split, read_lines, resolve_data_dir)


def write(tmp_path, name, content, binary=False):
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    (p.write_bytes if binary else p.write_text)(content)
    return p


def test_emotion_good_file(tmp_path):
    p = write(tmp_path, "e.jsonl", '{"text": "i am happy", "label": "joy"}\n\n{"text": "oh no", "label": "fear"}\n')
    ex = load_emotion(p)
    assert [(e.text, e.label) for e in ex] == [("i am happy", "joy"), ("oh no", "fear")]


@pytest.mark.parametrize("content, line, words", [
    ('{"text": "a", "label": "joy"}\n{"text": "b", "label": \n', 2, "malformed JSON"),
    ('{"text": "a", "label": "joy"}\n{"text": "b"}\n', 2, "missing field 'label'"),
    ('{"text": "a", "label": "boredom"}\n', 1, "unknown emotion label 'boredom'"),
    ('[1, 2]\n', 1, "expected a JSON object"),
    ('{"text": 3, "label": "joy"}\n', 1, "must be a string"),
])
def test_emotion_bad_files_name_file_and_line(tmp_path, content, line, words):
    p = write(tmp_path, "emotion/train.jsonl", content)
    with pytest.raises(DataError) as ei:
        load_emotion(p)
    msg = str(ei.value)
    assert str(p) in msg and f"line {line}" in msg and words in msg
    assert ei.value.line == line


def test_empty_and_missing_files(tmp_path):
    p = write(tmp_path, "x.jsonl", "\n \n")
    with pytest.raises(DataError, match="empty"):
        load_instruct(p)
    with pytest.raises(DataError, match="empty"):
        read_lines(write(tmp_path, "y.txt", ""))
    with pytest.raises(DataError, match="missing"):
        load_split(tmp_path, "news", "train")


def test_non_utf8_bytes(tmp_path):
    p = write(tmp_path, "news/train.txt", b"good line\nbad \xff byte\n", binary=True)
    with pytest.raises(DataError) as ei:
        read_lines(p)
    assert "UTF-8" in str(ei.value) and "line 2" in str(ei.value) and "0xff" in str(ei.value)


def test_gsm8k_final_answer_and_bad_answer(tmp_path):
    p = write(tmp_path, "g.jsonl", json.dumps({"question": "q?", "answer": "2+2=<<2+2=4>>4\n#### 1,004"}) + "\n")
    assert load_gsm8k(p)[0].final == "1004"
    p = write(tmp_path, "h.jsonl", json.dumps({"question": "q?", "answer": "no marker"}) + "\n")
    with pytest.raises(DataError, match="####"):
        load_gsm8k(p)


def test_iptc(tmp_path):
    p = write(tmp_path, "m.tsv", "qcode\tlevel\tpath\tdefinition\tis_leaf\n"
                                 "t:1\t1\tsport\tGames\t0\nt:2\t2\tsport > tennis\tRackets\t1\n")
    topics = load_iptc(p)
    assert topics[1].path == ("sport", "tennis") and topics[1].is_leaf and topics[1].name == "tennis"
    bad = write(tmp_path, "n.tsv", "qcode\tlevel\tpath\tdefinition\tis_leaf\nt:1\t1\tsport\n")
    with pytest.raises(DataError, match="line 2.*5 tab-separated"):
        load_iptc(bad)
    with pytest.raises(DataError, match="header"):
        load_iptc(write(tmp_path, "o.tsv", "a\tb\n"))


def test_unknown_dataset_and_data_dir(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="unknown dataset"):
        load_split(tmp_path, "imdb", "train")
    with pytest.raises(DataError, match="does not exist"):
        resolve_data_dir(tmp_path / "nope")
    monkeypatch.setenv("LM_DATA_DIR", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    assert resolve_data_dir(str(EMBEDDED_DIR)) == EMBEDDED_DIR
    monkeypatch.delenv("LM_DATA_DIR")
    assert resolve_data_dir() == EMBEDDED_DIR


def test_book_shuffle_and_split_match_the_books_code():
    items = list(range(103))
    book = list(items)
    state = random.getstate()
    random.seed(42)
    random.shuffle(book)  # exactly the book's two lines
    random.setstate(state)
    assert book_shuffle(items) == book
    assert items == list(range(103))  # input untouched
    train, test = book_split(book)
    assert len(train) == int(103 * 0.9) == 92 and train + test == book


def test_every_embedded_dataset_loads():
    for dataset, files in LAYOUT.items():
        for rel in files:
            if not (EMBEDDED_DIR / rel).is_file():
                pytest.skip(f"embedded data not generated yet ({rel})")
            split = rel.split("/")[1].split(".")[0]
            assert len(load_split(EMBEDDED_DIR, dataset, split)) > 0


@needs_shared
def test_every_real_dataset_loads():
    assert len(load_split(SHARED_DATA, "emotion", "train")) == 16000
    assert {e.label for e in load_split(SHARED_DATA, "emotion", "valid")} == set(EMOTION_LABELS)
    assert len(load_split(SHARED_DATA, "gsm8k", "train")) == 7473
    assert load_split(SHARED_DATA, "gsm8k", "train")[0].final == "72"
    assert len(load_split(SHARED_DATA, "instruct", "instruct")) == 1000
    assert len(load_split(SHARED_DATA, "arxiv", "abstracts")) == 2000
    assert len(load_split(SHARED_DATA, "iptc", "mediatopic")) == 1094
    assert len(load_split(SHARED_DATA, "news", "valid")) == 5000
