"""The hosted labeller against a fake OpenAI-compatible server on 127.0.0.1.

The server (an `http.server` thread) answers by model name: valid IDs, invalid IDs, garbage,
429 with Retry-After, 500, slow replies, a 401 that echoes the key, a redirect. It handles at
most MAX_REQUESTS requests and stops by itself after LIFETIME seconds.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lm.data.loaders import Abstract
from lm.errors import ConfigError
from lm.labeling.answers import AnswerCache
from lm.labeling.ask_all import ask_all
from lm.labeling.hosted import (ChatClient, EndpointConfig, HostedError, HostedLabeller, Secret, completions_url,
                                key_from_env, retry_after)
from lm.labeling.taxonomy import load_taxonomy

KEY = "sk-test-7f3a9c-DO-NOT-LEAK"
MAX_REQUESTS = 200
LIFETIME = 60.0
ROWS = [("toy:1000", 1, "food", "Food", 0), ("toy:1100", 2, "food > bread", "Loaves", 1),
        ("toy:1200", 2, "food > cheese", "Cheese", 1), ("toy:1300", 2, "food > honey", "Honey", 1)]
CANDS = ["toy:1100", "toy:1200", "toy:1300"]


class FakeServer:
    def __init__(self):
        self.requests: list[dict] = []      # {"model", "auth", "path"}
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):   # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                model = body["model"]
                with fake.lock:
                    n = fake.counts[model] = fake.counts.get(model, 0) + 1
                    fake.requests.append({"model": model, "auth": self.headers.get("Authorization"),
                                          "path": self.path})
                listed = body["messages"][0]["content"].split("possible categories:")[-1]
                ids = re.findall(r"ID: (toy:\d+)", listed)
                fake.respond(self, model, n, ids)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.timeout = 0.1
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        deadline = time.monotonic() + LIFETIME
        while not self.stop.is_set() and time.monotonic() < deadline and len(self.requests) < MAX_REQUESTS:
            self.server.handle_request()
        self.server.server_close()

    @staticmethod
    def send(h, status, payload=None, raw=None, headers=()):
        data = raw if raw is not None else json.dumps(payload).encode()
        try:
            h.send_response(status)
            for k, v in headers:
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def chat(self, h, text):
        self.send(h, 200, {"choices": [{"message": {"role": "assistant", "content": text}}]})

    def respond(self, h, model, n, ids):
        if model == "valid":               # thinks aloud; the last ID is the answer
            self.chat(h, f"Maybe {ids[0]}? No: {ids[-1]}")
        elif model == "invalid":
            self.chat(h, "toy:9999")
        elif model == "garbage":           # not JSON, then JSON without choices, then no content
            if n % 3 == 1:
                self.send(h, 200, raw=b"<html>oops</html>")
            elif n % 3 == 2:
                self.send(h, 200, {"error": "no choices"})
            else:
                self.send(h, 200, {"choices": [{"message": {"content": None}}]})
        elif model == "ratelimit":         # 429 twice with Retry-After, then fine
            if n <= 2:
                self.send(h, 429, {"error": "slow down"}, headers=[("Retry-After", "0.05")])
            else:
                self.chat(h, ids[1])
        elif model == "flaky":             # 500 then fine
            if n == 1:
                self.send(h, 500, {"error": "boom"})
            else:
                self.chat(h, ids[0])
        elif model == "down":
            self.send(h, 503, {"error": "down"})
        elif model == "slow":              # the first reply comes after the client's timeout
            if n == 1:
                time.sleep(1.0)
            self.chat(h, ids[2])
        elif model == "cut":               # the first reply is cut short, the connection closed
            if n == 1:
                h.send_response(200)
                h.send_header("Content-Length", "500")
                h.end_headers()
                h.wfile.write(b'{"choices": [')
                h.close_connection = True
            else:
                self.chat(h, ids[0])
        elif model == "echo401":           # a careless server that echoes the key it was sent
            self.send(h, 401, {"error": f"bad key {h.headers.get('Authorization')}"})
        elif model == "redirect":
            self.send(h, 302, {}, headers=[("Location", self.url + "/elsewhere")])
        else:
            self.send(h, 404, {"error": "unknown model"})


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.stop.set()
    s.thread.join(timeout=5)


@pytest.fixture
def taxonomy(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("qcode\tlevel\tpath\tdefinition\tis_leaf\n" +
                    "".join("\t".join(map(str, r)) + "\n" for r in ROWS), encoding="utf-8")
    return load_taxonomy(path)


def client_for(server, sleeps=None, **kw):
    cfg = EndpointConfig(server.url, **{"timeout": 0.3, "retries": 2, "backoff": 0.01, "concurrency": 4, **kw})
    return ChatClient(cfg, Secret(KEY), sleep=(sleeps.append if sleeps is not None else time.sleep))


DOC = Abstract("d1", "Bread", "We bake.")


def test_valid_answer_last_match_and_key_in_header_only(server, taxonomy):
    lab = HostedLabeller(client_for(server), "valid", taxonomy)
    assert lab.label(DOC, CANDS) == "toy:1300"
    assert server.requests == [{"model": "valid", "auth": f"Bearer {KEY}", "path": "/v1/chat/completions"}]
    assert KEY not in repr(lab) and KEY not in repr(lab.client.key) and KEY not in str(vars(lab.client))


def test_invalid_ids_and_garbage_use_all_attempts_then_none(server, taxonomy, caplog):
    client = client_for(server)
    with caplog.at_level(logging.INFO, logger="lm.labeling.hosted"):
        assert HostedLabeller(client, "invalid", taxonomy).label(DOC, CANDS) is None
        assert HostedLabeller(client, "garbage", taxonomy).label(DOC, CANDS) is None
    assert server.counts == {"invalid": 3, "garbage": 3}   # the book's 3 attempts, no HTTP retries
    assert "not a chat completion" in caplog.text and "no valid ID" in caplog.text


def test_429_honours_retry_after_and_500_backs_off(server, taxonomy):
    sleeps = []
    client = client_for(server, sleeps)
    assert HostedLabeller(client, "ratelimit", taxonomy).label(DOC, CANDS) == "toy:1200"
    assert sleeps == [0.05, 0.05] and server.counts["ratelimit"] == 3
    sleeps.clear()
    assert HostedLabeller(client, "flaky", taxonomy).label(DOC, CANDS) == "toy:1100"
    assert len(sleeps) == 1 and 0.01 <= sleeps[0] <= 0.015        # backoff * 2**0 * (1 + jitter/2)
    assert client.stats == {"requests": 5, "retries": 3, "failed": 0}


def test_server_down_gives_up_after_retries_and_attempts(server, taxonomy):
    sleeps = []
    lab = HostedLabeller(client_for(server, sleeps, max_wait=0.02), "down", taxonomy, attempts=2)
    assert lab.label(DOC, CANDS) is None
    assert server.counts["down"] == 2 * 3                          # 2 attempts x (1 + 2 retries)
    assert len(sleeps) == 2 * 2 and sleeps[1] == sleeps[3] == 0.02    # 0.02-0.03 s of backoff, capped by max_wait
    with pytest.raises(HostedError, match=r"HTTP 503; gave up after 3 tries"):
        lab.client.complete("down", "x")


def test_slow_reply_times_out_and_is_retried(server, taxonomy):
    """The first reply comes after 1 s, past the client's 0.3 s timeout: answered by a retry. (No time is
    asserted: on a loaded machine a retry may time out too, so it may take more than one.)"""
    client = client_for(server, [])
    assert HostedLabeller(client, "slow", taxonomy).label(DOC, CANDS) == "toy:1300"
    assert server.counts["slow"] >= 2                       # had it waited for the slow reply, one request
    assert client.stats["retries"] == server.counts["slow"] - 1


def test_reply_cut_short_is_retried(server, taxonomy):
    client = client_for(server, [])
    assert HostedLabeller(client, "cut", taxonomy).label(DOC, CANDS) == "toy:1100"
    assert server.counts["cut"] == 2 and client.stats["retries"] == 1


def test_key_never_in_errors_logs_or_cache(server, taxonomy, caplog, tmp_path, capsys):
    client = client_for(server, [])
    with pytest.raises(HostedError) as e:
        client.complete("echo401", "hello")
    assert "HTTP 401" in str(e.value) and "<hidden>" in str(e.value)     # the echoed key is redacted
    assert KEY not in str(e.value) and KEY not in repr(e.value)
    with pytest.raises(HostedError, match="HTTP 302") as e:               # a redirect is not followed
        client.complete("redirect", "hello")
    assert [r["path"] for r in server.requests].count("/v1/elsewhere") == 0
    labs = [HostedLabeller(client, m, taxonomy) for m in ("valid", "echo401", "ratelimit", "garbage")]
    docs = [Abstract(f"d{i}", "Bread", "We bake.") for i in range(4)]
    with caplog.at_level(logging.DEBUG):
        with AnswerCache(tmp_path / "answers.jsonl") as cache:
            answers = ask_all(labs, docs, [CANDS] * 4, cache, quiet=False)
    assert answers["hosted:valid"] == {f"d{i}": "toy:1300" for i in range(4)}
    assert set(answers["hosted:echo401"].values()) == {None}
    assert "HTTP 401" in caplog.text
    out = capsys.readouterr()
    for text in (caplog.text, out.out, out.err, (tmp_path / "answers.jsonl").read_text()):
        assert KEY not in text


def test_concurrency_limit_holds(server, taxonomy):
    client = client_for(server, [], concurrency=2, timeout=3.0)
    inflight, peak, lock = [0], [0], threading.Lock()
    real = client.opener.open

    def counting(req, timeout):
        with lock:
            inflight[0] += 1
            peak[0] = max(peak[0], inflight[0])
        try:
            time.sleep(0.05)
            return real(req, timeout=timeout)
        finally:
            with lock:
                inflight[0] -= 1
    client.opener.open = counting
    lab = HostedLabeller(client, "valid", taxonomy)
    lab.threads = 8                        # more threads than the endpoint allows requests
    docs = [Abstract(f"d{i}", "B", "b") for i in range(10)]
    answers = ask_all([lab], docs, [CANDS] * 10, AnswerCache(None), quiet=True)
    assert set(answers["hosted:valid"].values()) == {"toy:1300"} and peak[0] == 2


def test_configuration_checks(monkeypatch):
    assert completions_url("https://x.org/api/v1/") == "https://x.org/api/v1/chat/completions"
    assert completions_url("https://x.org/v1/chat/completions") == "https://x.org/v1/chat/completions"
    with pytest.raises(ConfigError, match="plain http"):
        ChatClient(EndpointConfig("http://example.org/v1"), Secret(KEY))
    ChatClient(EndpointConfig("http://example.org/v1"), None)           # no key: http is allowed
    with pytest.raises(ConfigError, match="http"):
        ChatClient(EndpointConfig("ftp://example.org"), None)
    monkeypatch.delenv("LM_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="LM_TEST_KEY: that environment variable is not set"):
        key_from_env("LM_TEST_KEY")
    monkeypatch.setenv("LM_TEST_KEY", KEY)
    assert key_from_env("LM_TEST_KEY").reveal() == KEY and key_from_env(None) is None
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(Secret(KEY))


def test_retry_after_parsing():
    assert retry_after("3") == 3.0 and retry_after("0.5") == 0.5 and retry_after(None) is None
    assert retry_after("soon") is None and retry_after("-4") == 0.0
    assert retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


def test_cli_with_hosted_models_never_shows_the_key(server, tmp_path, monkeypatch, capsys, caplog):
    from lm.labeling.__main__ import main
    data = tmp_path / "data"
    (data / "arxiv").mkdir(parents=True)
    (data / "iptc").mkdir()
    (data / "iptc" / "mediatopic.tsv").write_text("qcode\tlevel\tpath\tdefinition\tis_leaf\n" + "".join(
        "\t".join(map(str, r)) + "\n" for r in ROWS), encoding="utf-8")
    (data / "arxiv" / "abstracts.jsonl").write_text("".join(
        json.dumps({"id": f"d{i}", "title": "Bread", "abstract": "Loaves and cheese."}) + "\n" for i in range(5)))
    monkeypatch.setenv("LM_TEST_KEY", KEY)
    out = tmp_path / "out"
    argv = ["--data-dir", str(data), "--out", str(out), "--labellers", "tfidf", "--k", "3",
            "--url", server.url, "--models", "valid,ratelimit,echo401", "--api-key-env", "LM_TEST_KEY",
            "--timeout", "2", "--backoff", "0.01", "--retries", "2"]
    with caplog.at_level(logging.DEBUG):
        assert main(argv) == 0
    labels = [json.loads(x) for x in (out / "labels.jsonl").read_text().splitlines()]
    # candidates by TF-IDF: bread, cheese, then honey (no shared word); the fake answers the last one
    assert [x["votes"]["hosted:valid"] for x in labels] == ["toy:1300"] * 5
    assert all(x["votes"]["hosted:echo401"] is None for x in labels)
    s = json.loads((out / "summary.json").read_text())
    assert s["labellers_used"] == ["tfidf", "hosted:valid", "hosted:ratelimit", "hosted:echo401"]
    n = len(server.requests)
    assert main(argv) == 0 and len(server.requests) == n        # resumed: nothing asked again
    assert all(r["auth"] == f"Bearer {KEY}" for r in server.requests)
    printed = capsys.readouterr()
    files = "".join(p.read_text() for p in out.iterdir())
    for text in (printed.out, printed.err, caplog.text, files, " ".join(argv)):
        assert KEY not in text
