"""Our word2vec reader on hand-written binary and text files, and one clear error per malformed file."""
import gzip
import struct

import numpy as np
import pytest

from lm.errors import DataError, FileFormatError
from lm.finetune import word_vectors
from lm.finetune.word_vectors import load_word_vectors

VECS = {"the": [0.5, -1.0, 2.0], "Happy": [1.0, 0.0, -0.25], "sad": [0.0, 3.5, 1e-3]}


def binary_bytes(vecs=VECS, header=None, newline=True):
    out = (header or f"{len(vecs)} 3\n").encode()
    for w, v in vecs.items():
        out += w.encode() + b" " + struct.pack("<3f", *v) + (b"\n" if newline else b"")
    return out


def text_bytes(vecs=VECS, header=True):
    lines = [f"{len(vecs)} 3"] if header else []
    lines += [w + " " + " ".join(repr(x) for x in v) for w, v in vecs.items()]
    return ("\n".join(lines) + "\n").encode()


def write(tmp_path, data, name="vectors.dat"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def check(wv, words=("the", "Happy", "sad")):
    assert wv.words == list(words) and wv.dim == 3 and wv.vectors.dtype == np.float32
    for w in words:
        assert wv.vectors[wv.index[w]].tolist() == pytest.approx(VECS[w], abs=1e-7)


@pytest.mark.parametrize("newline", [True, False])
def test_binary_file(tmp_path, newline):
    p = write(tmp_path, binary_bytes(newline=newline))
    check(load_word_vectors(p))
    check(load_word_vectors(p, binary=True))


def test_text_file_with_and_without_header(tmp_path):
    check(load_word_vectors(write(tmp_path, text_bytes())))
    check(load_word_vectors(write(tmp_path, text_bytes(header=False), "glove.txt")))   # GloVe's layout


def test_gzipped_file_as_the_book_downloads_it(tmp_path):
    check(load_word_vectors(write(tmp_path, gzip.compress(binary_bytes()))))


def test_keep_and_lookup(tmp_path):
    wv = load_word_vectors(write(tmp_path, binary_bytes()), keep={"Happy", "sad", "absent"})
    assert wv.words == ["Happy", "sad"]
    assert wv.lookup("sad").tolist() == pytest.approx(VECS["sad"])
    assert wv.lookup("SAD").tolist() == pytest.approx(VECS["sad"])      # lowercase fallback
    assert wv.lookup("happy") is None                                   # no lowercase entry: unknown
    assert wv.lookup("Happy") is not None


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_records_across_read_chunks(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(word_vectors, "CHUNK", chunk)     # a record split over reads must still parse
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(200)]
    vecs = rng.standard_normal((200, 5)).astype(np.float32)
    data = b"200 5\n" + b"".join(w.encode() + b" " + v.tobytes() + b"\n" for w, v in zip(words, vecs))
    wv = load_word_vectors(write(tmp_path, data))
    assert wv.words == words and np.array_equal(wv.vectors, vecs)
    check(load_word_vectors(write(tmp_path, text_bytes(), "v.txt")))


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"\n\n", "empty"),
    (b"3 0\n", "both must be >= 1"),
    (binary_bytes()[:-7], "truncated: entry 3 ('sad') has"),
    (binary_bytes(header="4 3\n"), "truncated: the header promises 4 words"),
    (binary_bytes(header="2 3\n"), "more data after the 2 words"),
    (b"1 3\n\xff\xfe " + struct.pack("<3f", 1, 2, 3), "not valid UTF-8"),
    (b"1 3\nnan " + struct.pack("<3f", float("nan"), 2, 3), "non-finite"),
    (text_bytes() + b"extra 1 2 3\n", "more words than the header's 3"),
    (b"3 3\nthe 1 2 3\nHappy 1 2\nsad 1 2 3\n", "line 3: expected 'Happy' and 3 numbers, got 2"),
    (b"2 3\nthe 1 2 3\n", "truncated: the header promises 2 words, the file has 1"),
    (b"1 3\nthe 1 two 3\n", "line 2: not a number in the vector of 'the'"),
    (b"1 3\nthe 1 inf 3\n", "non-finite"),
    (b"the 1 2 3\nsad 1 2\n", "line 2: expected 'sad' and 3 numbers, got 2"),
    (b"2 3\nthe 1 2\nsad 1 2 3\n", "line 2: expected 'the' and 3 numbers, got 2"),   # still read as text
    (b"justaword\n", "expected a header 'V D' or a line 'word v1 v2 ...'"),
    (gzip.compress(binary_bytes())[:-20], "corrupt or truncated gzip"),
    (gzip.compress(binary_bytes())[:12] + b"\xff" * 30 + gzip.compress(binary_bytes())[42:], "corrupt or truncated"),
])
def test_malformed_files_raise_one_clear_error(tmp_path, data, words):
    p = write(tmp_path, data)
    with pytest.raises(DataError) as ei:
        load_word_vectors(p)
    assert isinstance(ei.value, FileFormatError) and str(p) in str(ei.value) and words in str(ei.value)


def test_binary_flag_on_a_file_without_header(tmp_path):
    with pytest.raises(DataError, match="must start with the header 'V D'"):
        load_word_vectors(write(tmp_path, text_bytes(header=False)), binary=True)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.bin: missing file"):
        load_word_vectors(tmp_path / "nope.bin")
