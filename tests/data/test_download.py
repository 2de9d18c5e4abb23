"""The download machinery against a local HTTP server on 127.0.0.1 serving fixture files built here.

Nothing leaves the machine: every URL points at 127.0.0.1 (a server started per test, or a closed
port), and proxies are bypassed for it.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import json
import random
import socket
import tarfile
import threading
from pathlib import Path

import pytest

import lm.data.download as dl
import lm.data.fetch as fetch
from conftest import SHARED_GPT2, needs_gpt2_files
from lm.errors import ConfigError, DataError, DownloadError, ChecksumError, UnsafeArchiveError
from lm.data.loaders import EMOTION_LABELS, load_split, resolve_data_dir
from lm.data.download import download_all, download_dataset, download_gpt2, main
from lm.data.fetch import extract_members, fetch_url

TIMEOUT = 3.0  # seconds; everything is local


# --------------------------------------------------------------------------------------------
# A local web server
# --------------------------------------------------------------------------------------------

class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; paths in `server.truncate` get a Content-Length larger than the body,
    half the body, and a closed connection (an interrupted transfer)."""

    def do_GET(self):
        if self.path in self.server.truncate:
            body = Path(self.translate_path(self.path)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 1000))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):  # keep test output quiet
        pass


class Site:
    def __init__(self, www: Path, url: str, httpd):
        self.www, self.url, self.httpd = www, url, httpd

    def put(self, rel: str, data: bytes) -> bytes:
        path = self.www / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return data

    def truncate(self, rel: str) -> None:
        self.httpd.truncate.add("/" + rel)


@pytest.fixture(autouse=True)
def _local_only(monkeypatch):
    """No proxy for 127.0.0.1, and no environment overrides leaking in from the shell."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("LM_DATA_BASE_URL", "LM_HUB_BASE_URL", "HF_ENDPOINT", "LM_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def site(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    httpd.truncate = set()
    httpd.timeout = TIMEOUT
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Site(www, f"http://127.0.0.1:{httpd.server_address[1]}", httpd)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connection refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def leftovers(folder: Path) -> list[Path]:
    """Temporary or staging files that must never survive."""
    return [p for p in folder.rglob("*") if p.name.endswith(".part") or ".downloads" in p.parts]


def no_files(folder: Path) -> bool:
    """True if `folder` is absent or holds no file (an empty folder may stay behind)."""
    return not folder.exists() or not any(p.is_file() for p in folder.rglob("*"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# Fixture files in the book's formats
# --------------------------------------------------------------------------------------------

BROWN = ["The Fulton County Grand Jury said Friday an investigation took place .",
         "The jury further said in term-end presentments that the City Executive Committee deserves praise .",
         "Ünïcode survives the trip ."]
NEWS_TRAIN = [f"Stocks rose ## points on day {i} ." for i in range(7)]
NEWS_TEST = ["Oil fell ## cents .", "Gold was unchanged ."]
INSTRUCT = [{"instruction": "Reverse the word cat.", "solution": "tac"},
            {"instruction": "What is 2 + 3?", "solution": "5"},
            {"instruction": "Name a colour.\nOne word.", "solution": "blue"}]
GSM8K_TRAIN = [{"question": "Ann has 3 apples and buys 4. How many?", "answer": "3 + 4 = 7\n#### 7"},
               {"question": "A box holds 1,000 pens; 1 is lost.", "answer": "1000 - 1 = 999\n#### 999"}]
GSM8K_TEST = [{"question": "2 times 21?", "answer": "2 * 21 = 42\n#### 42"}]
EMOTION_PATH = "data/emotions"


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def jsonl(rows) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def lines(ls) -> bytes:
    return ("\n".join(ls) + "\n").encode()


def emotion_rows(n: int = 50) -> list[dict]:
    """Labels as integers (dair-ai's encoding) and as names, mixed."""
    return [{"text": f"tweet number {i}", "label": i % 6 if i % 2 else EMOTION_LABELS[(i * 5) % 6]} for i in range(n)]


def tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def reg(name: str, data: bytes):
    return tarfile.TarInfo(name), data


def link(name: str, target: str, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def news_tar(extra=()) -> bytes:
    return tar_gz([reg("news/train.txt", lines(NEWS_TRAIN)), reg("news/test.txt", lines(NEWS_TEST)), *extra])


GSM = "openai/grade-school-math/master/grade_school_math/data"


def publish_book(site: Site) -> None:
    """Everything download_all needs, at the original paths."""
    site.put("data/brown", gz(lines(BROWN)))
    site.put("data/news", news_tar([reg("news/README", b"not needed\n"), link("news/alias", "train.txt")]))
    site.put(EMOTION_PATH, gz(jsonl(emotion_rows())))
    site.put("data/instruct", jsonl(INSTRUCT))
    site.put(f"{GSM}/train.jsonl", jsonl(GSM8K_TRAIN))
    site.put(f"{GSM}/test.jsonl", jsonl(GSM8K_TEST))


# --------------------------------------------------------------------------------------------
# fetch_url(): one URL to one file
# --------------------------------------------------------------------------------------------

def test_download_streams_verifies_and_returns_digest(site, tmp_path):
    data = site.put("blob.bin", random.Random(0).randbytes(3 * fetch.CHUNK + 123))  # several chunks
    dest = tmp_path / "out" / "blob.bin"
    digest = fetch_url(f"{site.url}/blob.bin", dest, sha256=sha(data), timeout=TIMEOUT)
    assert digest == sha(data)
    assert dest.read_bytes() == data
    assert leftovers(dest.parent) == [] and sorted(p.name for p in dest.parent.iterdir()) == ["blob.bin"]


def test_checksum_mismatch_is_an_error_and_leaves_old_file_alone(site, tmp_path):
    site.put("f.txt", b"served bytes\n")
    dest = tmp_path / "out" / "f.txt"
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        fetch_url(f"{site.url}/f.txt", dest, sha256="0" * 64, timeout=TIMEOUT)
    assert list(dest.parent.iterdir()) == []          # no file, no temp file
    dest.write_bytes(b"old\n")
    with pytest.raises(ChecksumError):
        fetch_url(f"{site.url}/f.txt", dest, sha256="0" * 64, timeout=TIMEOUT)
    assert dest.read_bytes() == b"old\n" and leftovers(dest.parent) == []


def test_interrupted_transfer_leaves_no_partial_file(site, tmp_path):
    site.put("big.bin", bytes(range(256)) * 40)
    site.truncate("big.bin")
    dest = tmp_path / "out" / "big.bin"
    with pytest.raises(DownloadError, match=r"interrupted: got 5120 of 11240 bytes"):
        fetch_url(f"{site.url}/big.bin", dest, timeout=TIMEOUT)
    assert list(dest.parent.iterdir()) == []


def test_ctrl_c_leaves_no_partial_file(site, tmp_path, monkeypatch):
    site.put("big.bin", bytes(3 * fetch.CHUNK))

    class Interrupting(fetch.Progress):
        def update(self, n=1, **postfix):
            raise KeyboardInterrupt

    monkeypatch.setattr(fetch, "Progress", Interrupting)
    dest = tmp_path / "out" / "big.bin"
    with pytest.raises(KeyboardInterrupt):
        fetch_url(f"{site.url}/big.bin", dest, timeout=TIMEOUT)
    assert list(dest.parent.iterdir()) == []


def test_http_404_is_a_clear_error(site, tmp_path):
    url = f"{site.url}/data/nothing-here"
    with pytest.raises(DownloadError) as e:
        fetch_url(url, tmp_path / "out" / "x", timeout=TIMEOUT)
    assert "HTTP 404" in str(e.value) and url in str(e.value)
    assert "--data-dir" not in str(e.value)            # reachable host: not the offline message
    assert list((tmp_path / "out").iterdir()) == []


def test_connection_refused_names_url_and_data_dir(tmp_path, cache):
    base = closed_port_url()
    with pytest.raises(DownloadError) as e:
        fetch_url(f"{base}/data/brown", tmp_path / "out" / "brown", timeout=TIMEOUT)
    assert f"{base}/data/brown" in str(e.value) and "--data-dir" in str(e.value) and "../shared/data" in str(e.value)
    with pytest.raises(DownloadError, match="--data-dir"):
        download_dataset("brown", cache, base_url=base, timeout=TIMEOUT)
    assert no_files(cache / "brown") and leftovers(cache) == []


# --------------------------------------------------------------------------------------------
# Datasets end to end, loaded back through lm.data
# --------------------------------------------------------------------------------------------

def test_brown_end_to_end_and_manifest(site, cache):
    served = site.put("data/brown", gz(lines(BROWN)))
    root = download_dataset("brown", cache, base_url=site.url, timeout=TIMEOUT)
    assert root == cache and resolve_data_dir(root) == cache
    assert load_split(root, "brown", "train") == BROWN
    manifest = json.loads((cache / "manifest.json").read_text())
    entry = manifest["files"]["https://www.thelmbook.com/data/brown"]   # keyed by the original URL
    assert entry["sha256"] == sha(served) and entry["bytes"] == len(served)
    assert entry["downloaded_from"] == f"{site.url}/data/brown"
    assert leftovers(cache) == []


def test_news_end_to_end_valid_is_test(site, cache):
    site.put("data/news", news_tar([reg("news/README", b"not needed\n"), link("news/alias", "train.txt"),
                                    reg("./other/big.txt", b"x\n")]))
    root = download_dataset("news", cache, base_url=site.url, timeout=TIMEOUT)
    assert load_split(root, "news", "train") == NEWS_TRAIN
    assert load_split(root, "news", "valid") == NEWS_TEST
    assert load_split(root, "news", "test") == NEWS_TEST
    # only the members needed were extracted
    assert sorted(p.name for p in (root / "news").iterdir()) == ["test.txt", "train.txt", "valid.txt"]
    assert not (root / "other").exists() and leftovers(cache) == []


def test_emotion_end_to_end_follows_the_books_protocol(site, cache):
    rows = emotion_rows(50)
    site.put(EMOTION_PATH, gz(jsonl(rows)))
    root = download_dataset("emotion", cache, base_url=site.url, timeout=TIMEOUT)
    # the book, literally: random.seed(42); random.shuffle(data); int(len * 0.9)
    state = random.getstate()
    try:
        expected = [{"text": r["text"], "label": r["label"] if isinstance(r["label"], str) else EMOTION_LABELS[r["label"]]}
                    for r in rows]
        random.seed(42)
        random.shuffle(expected)
    finally:
        random.setstate(state)
    train, valid = load_split(root, "emotion", "train"), load_split(root, "emotion", "valid")
    assert (len(train), len(valid)) == (45, 5)
    assert [(e.text, e.label) for e in train + valid] == [(r["text"], r["label"]) for r in expected]
    assert {e.label for e in train + valid} == set(EMOTION_LABELS)


@pytest.mark.parametrize("bad, line", [(6, 4), ("happy", 4), (True, 4), (None, 4)])
def test_emotion_bad_label_is_refused_naming_the_line(site, cache, bad, line):
    rows = emotion_rows(10)
    rows[line - 1]["label"] = bad
    site.put(EMOTION_PATH, gz(jsonl(rows)))
    with pytest.raises(DataError) as e:
        download_dataset("emotion", cache, base_url=site.url, timeout=TIMEOUT)
    assert e.value.line == line and "unknown emotion label" in str(e.value) and EMOTION_PATH in str(e.value)
    assert no_files(cache / "emotion") and leftovers(cache) == []


def test_instruct_and_gsm8k_end_to_end(site, cache):
    site.put("data/instruct", jsonl(INSTRUCT))
    site.put(f"{GSM}/train.jsonl", jsonl(GSM8K_TRAIN))
    site.put(f"{GSM}/test.jsonl", jsonl(GSM8K_TEST))
    download_dataset("instruct", cache, base_url=site.url, timeout=TIMEOUT)
    download_dataset("gsm8k", cache, base_url=site.url, timeout=TIMEOUT)
    assert [(e.instruction, e.solution) for e in load_split(cache, "instruct", "train")] == \
        [(r["instruction"], r["solution"]) for r in INSTRUCT]
    assert [e.final for e in load_split(cache, "gsm8k", "train")] == ["7", "999"]
    assert [e.final for e in load_split(cache, "gsm8k", "test")] == ["42"]
    assert leftovers(cache) == []


def test_bad_gsm8k_answer_is_refused(site, cache):
    site.put(f"{GSM}/train.jsonl", jsonl([{"question": "q", "answer": "no final number"}]))
    site.put(f"{GSM}/test.jsonl", jsonl(GSM8K_TEST))
    with pytest.raises(DataError, match="####") as e:
        download_dataset("gsm8k", cache, base_url=site.url, timeout=TIMEOUT)
    assert e.value.line == 1 and f"{GSM}/train.jsonl" in str(e.value)
    assert no_files(cache / "gsm8k") and leftovers(cache) == []


def test_corrupt_gzip_is_refused(site, cache):
    site.put("data/brown", gz(lines(BROWN * 50))[:-30])   # cut off: a truncated gzip stream
    with pytest.raises(DataError, match="cannot decompress"):
        download_dataset("brown", cache, base_url=site.url, timeout=TIMEOUT)
    assert no_files(cache / "brown") and leftovers(cache) == []


def test_interrupted_dataset_download_leaves_nothing(site, cache):
    site.put("data/brown", gz(lines(BROWN * 100)))
    site.truncate("data/brown")
    with pytest.raises(DownloadError, match="interrupted"):
        download_dataset("brown", cache, base_url=site.url, timeout=TIMEOUT)
    assert no_files(cache / "brown") and leftovers(cache) == []
    assert not (cache / "manifest.json").exists()      # nothing recorded for a failed download


def test_fetch_all_then_cached_without_network(site, cache, monkeypatch):
    publish_book(site)
    monkeypatch.setenv("LM_DATA_BASE_URL", site.url)   # the environment variable path
    root = download_all(cache, timeout=TIMEOUT)
    for rel in ("brown/brown.txt", "news/train.txt", "news/valid.txt", "news/test.txt", "emotion/train.jsonl",
                "emotion/valid.jsonl", "instruct/instruct.jsonl", "gsm8k/train.jsonl", "gsm8k/test.jsonl"):
        assert (root / rel).is_file(), rel
    assert len(json.loads((cache / "manifest.json").read_text())["files"]) == 6
    # a second call finds everything in place and does not touch the network at all
    monkeypatch.setenv("LM_DATA_BASE_URL", closed_port_url())
    assert download_all(cache, timeout=TIMEOUT) == cache


def test_manifest_catches_a_later_tampered_file(site, cache):
    served = site.put("data/instruct", jsonl(INSTRUCT))
    download_dataset("instruct", cache, base_url=site.url, timeout=TIMEOUT)
    url = "https://www.thelmbook.com/data/instruct"
    assert json.loads((cache / "manifest.json").read_text())["files"][url]["sha256"] == sha(served)
    site.put("data/instruct", jsonl(INSTRUCT + [{"instruction": "evil", "solution": "payload"}]))
    with pytest.raises(ChecksumError, match="manifest") as e:
        download_dataset("instruct", cache, base_url=site.url, force=True, timeout=TIMEOUT)
    assert sha(served) in str(e.value)
    assert (cache / "instruct/instruct.jsonl").read_bytes() == served   # the good copy is untouched
    assert json.loads((cache / "manifest.json").read_text())["files"][url]["sha256"] == sha(served)
    assert leftovers(cache) == []


def test_unknown_dataset_lists_known(cache):
    with pytest.raises(ConfigError, match="brown, news, emotion, instruct, gsm8k"):
        download_dataset("imagenet", cache)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert dl.default_cache_dir() == tmp_path / "home" / ".cache" / "lm"
    monkeypatch.setenv("LM_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert dl.default_cache_dir() == tmp_path / "elsewhere"


def test_with_base_keeps_the_path():
    assert dl.with_base(f"{dl.GSM8K}/train.jsonl", "http://127.0.0.1:9/mirror/") == \
        f"http://127.0.0.1:9/mirror/{GSM}/train.jsonl"
    assert dl.with_base("https://www.thelmbook.com/data/brown", None) == "https://www.thelmbook.com/data/brown"


# --------------------------------------------------------------------------------------------
# Tar archives: refuse anything that could write outside the target
# --------------------------------------------------------------------------------------------

def _unsafe_members(tmp_path: Path):
    dev = tarfile.TarInfo("news/dev")
    dev.type = tarfile.CHRTYPE
    return {
        "dotdot": reg("news/../../evil.txt", b"evil\n"),
        "absolute": reg(str(tmp_path / "abs_evil.txt"), b"evil\n"),
        "symlink-out": link("news/link", "../../outside"),
        "symlink-abs": link("news/link", "/etc/passwd"),
        "hardlink-out": link("news/hl", "../x", tarfile.LNKTYPE),
        "device": (dev, None),
    }


@pytest.mark.parametrize("case, reason", [
    ("dotdot", "'..' in the path"), ("absolute", "absolute path"), ("symlink-out", "link leaving the archive"),
    ("symlink-abs", "link to absolute path"), ("hardlink-out", "link leaving the archive"), ("device", "device")])
def test_unsafe_tar_is_refused_and_nothing_written(tmp_path, case, reason):
    bad = _unsafe_members(tmp_path)[case]
    archive = tmp_path / "news.tar.gz"
    archive.write_bytes(news_tar([bad]))     # the bad member comes after the wanted ones
    before = sorted(tmp_path.rglob("*"))
    target = tmp_path / "t" / "news"
    with pytest.raises(UnsafeArchiveError, match="unsafe") as e:
        extract_members(archive, {"news/train.txt": target / "train.txt", "news/test.txt": target / "test.txt"})
    assert reason in str(e.value) and repr(bad[0].name) in str(e.value)
    after = sorted(p for p in tmp_path.rglob("*") if p != target and p != target.parent)
    assert after == before      # no file anywhere (no evil.txt, no abs_evil.txt, no temp file)


def test_unsafe_tar_through_fetch_dataset(site, cache, tmp_path):
    site.put("data/news", news_tar([reg("../escape.txt", b"evil\n")]))
    with pytest.raises(UnsafeArchiveError, match="'..'"):
        download_dataset("news", cache, base_url=site.url, timeout=TIMEOUT)
    assert no_files(cache / "news")
    assert not (tmp_path / "escape.txt").exists() and not (cache.parent / "escape.txt").exists()
    assert leftovers(cache) == []


def test_wanted_member_must_be_a_regular_file(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(tar_gz([reg("news/real.txt", b"x\n"), link("news/train.txt", "real.txt"),
                                reg("news/test.txt", b"y\n")]))
    with pytest.raises(UnsafeArchiveError, match="not a regular file"):
        extract_members(archive, {"news/train.txt": tmp_path / "o/train.txt", "news/test.txt": tmp_path / "o/test.txt"})
    assert no_files(tmp_path / "o")


def test_dot_slash_member_names_are_accepted(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(tar_gz([reg("./news/train.txt", b"x\n"), reg("./news/test.txt", b"y\n")]))
    extract_members(archive, {"news/train.txt": tmp_path / "o/train.txt", "news/test.txt": tmp_path / "o/test.txt"})
    assert (tmp_path / "o/train.txt").read_bytes() == b"x\n" and (tmp_path / "o/test.txt").read_bytes() == b"y\n"


def test_missing_member_is_named(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(tar_gz([reg("news/train.txt", b"x\n")]))
    with pytest.raises(DownloadError, match="lacks news/test.txt"):
        extract_members(archive, {"news/train.txt": tmp_path / "o/train.txt", "news/test.txt": tmp_path / "o/test.txt"})
    assert no_files(tmp_path / "o")


# --------------------------------------------------------------------------------------------
# GPT-2 from the hub
# --------------------------------------------------------------------------------------------

def _publish_gpt2(site: Site, name: str, vocab: bytes = b'{"!": 0}', merges: bytes = b"#version: 0.2\n") -> dict:
    files = {"config.json": json.dumps({"n_layer": 1, "n_head": 1, "n_embd": 4}).encode(),
             "model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
             "vocab.json": vocab, "merges.txt": merges}
    for f, data in files.items():
        site.put(f"openai-community/{name}/resolve/main/{f}", data)
    return files


def test_fetch_gpt2_gets_the_four_files(site, cache):
    files = _publish_gpt2(site, "gpt2-medium")
    folder = download_gpt2("gpt2-medium", cache, base_url=site.url, timeout=TIMEOUT)
    assert folder == cache / "gpt2" / "gpt2-medium"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files
    recorded = json.loads((cache / "manifest.json").read_text())["files"]
    for f, data in files.items():
        assert recorded[f"https://huggingface.co/openai-community/gpt2-medium/resolve/main/{f}"]["sha256"] == sha(data)
    assert dl.gpt2_folder(str(folder)) == folder          # a folder is taken as is


def test_fetch_gpt2_checks_the_known_tokenizer_digest(site, cache):
    _publish_gpt2(site, "gpt2")   # fake vocab.json: differs from the official file's known sha256
    with pytest.raises(ChecksumError, match="vocab.json"):
        download_gpt2("gpt2", cache, base_url=site.url, timeout=TIMEOUT)
    assert not (cache / "gpt2/gpt2/vocab.json").exists() and leftovers(cache) == []


@needs_gpt2_files
def test_fetch_gpt2_with_the_official_tokenizer_files(site, cache):
    files = _publish_gpt2(site, "gpt2", (SHARED_GPT2 / "vocab.json").read_bytes(),
                          (SHARED_GPT2 / "merges.txt").read_bytes())
    folder = download_gpt2("gpt2", cache, base_url=site.url, timeout=TIMEOUT)
    assert sha((folder / "vocab.json").read_bytes()) == dl.GPT2_SHA256[("gpt2", "vocab.json")]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files


def test_fetch_gpt2_unknown_name_lists_known(cache):
    with pytest.raises(ConfigError, match="gpt2, gpt2-medium, gpt2-large, gpt2-xl"):
        download_gpt2("gpt3", cache)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def test_cli_fetches_and_prints_the_data_dir(site, cache, capsys):
    site.put("data/instruct", jsonl(INSTRUCT))
    _publish_gpt2(site, "gpt2-large")
    rc = main(["instruct", "--gpt2", "gpt2-large", "--cache", str(cache), "--base-url", site.url,
               "--timeout", str(TIMEOUT)])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"--data-dir {cache}" in out and f"--gpt2 {cache / 'gpt2' / 'gpt2-large'}" in out
    assert len(load_split(cache, "instruct", "train")) == 3


def test_cli_offline_exits_1_with_the_hint(cache, capsys):
    rc = main(["brown", "--cache", str(cache), "--base-url", closed_port_url(), "--timeout", str(TIMEOUT)])
    assert rc == 1 and "--data-dir" in capsys.readouterr().err


def test_cli_every_flag_has_help():
    parser = dl.build_parser()
    assert all(a.help for a in parser._actions)
    with pytest.raises(SystemExit):
        parser.parse_args(["--gpt2", "gpt3"])
