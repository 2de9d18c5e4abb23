"""Fetching a Qwen2.5 model folder from the hub, against a local HTTP server (nothing leaves the machine)."""
from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading

import pytest

import lm.data.download as dl
from lm.errors import ChecksumError, ConfigError
from test_download import TIMEOUT, Handler, Site

NAME = "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("LM_HUB_BASE_URL", "HF_ENDPOINT", "LM_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "www").mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path / "www")))
    httpd.truncate = set()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield Site(tmp_path / "www", f"http://127.0.0.1:{httpd.server_address[1]}", httpd)
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def publish(site: Site) -> dict:
    files = {f: json.dumps({"file": f}).encode() for f in dl.MODEL_FILES[NAME]}
    for f, data in files.items():
        site.put(f"{NAME}/resolve/main/{f}", data)
    return files


def test_download_model_fetches_every_file_and_records_digests(site, tmp_path):
    files = publish(site)
    cache = tmp_path / "cache"
    folder = dl.download_model(NAME, cache, base_url=site.url, timeout=TIMEOUT)
    assert folder == cache / "models" / "Qwen" / "Qwen2.5-0.5B-Instruct"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files
    recorded = json.loads((cache / "manifest.json").read_text())["files"]
    for f, data in files.items():
        assert recorded[f"https://huggingface.co/{NAME}/resolve/main/{f}"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert dl.model_folder(str(folder)) == folder                  # a folder is taken as is
    # a later download whose bytes changed is refused (trust on first use)
    site.put(f"{NAME}/resolve/main/config.json", b'{"changed": true}')
    with pytest.raises(ChecksumError, match="config.json"):
        dl.download_model(NAME, cache, base_url=site.url, force=True, timeout=TIMEOUT)


def test_model_folder_fetches_a_hub_name(site, tmp_path, monkeypatch):
    publish(site)
    monkeypatch.setenv("LM_HUB_BASE_URL", site.url)
    folder = dl.model_folder(NAME, tmp_path / "cache")
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()


def test_unknown_model_lists_known(tmp_path):
    with pytest.raises(ConfigError, match="Qwen/Qwen2.5-1.5B-Instruct"):
        dl.download_model("Qwen/Qwen9-1B", tmp_path)
