"""`python -m lm.serve` on 127.0.0.1 (port 0) with tiny models of ours (tests/chat_models.py).

Every test starts its own server in a thread and stops it; every loop has a bound. The replies
are checked against the engine run in-process (`lm.inference.engine`) and against `lm.chat`.
"""
from __future__ import annotations

import fcntl
import http.client
import io
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

import chat_models
from lm.chat import load_engine
from lm.chat import main as chat_main
from lm.inference.engine import Engine, Settings
from lm.labeling.hosted import ChatClient, EndpointConfig, HostedLabeller, Secret
from lm.serve import main as serve_main
from lm.serve.server import Server
from lm.utils import torch_threads

KEY = "sk-serve-test-51c2-NEVER-LOGGED"



@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one torch thread (two threads waiting on each other on a busy machine cost 10-20x)."""
    with torch_threads(1):
        yield

@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    return {"random": chat_models.random_chat_model(root / "random"),
            "labelling": chat_models.labelling_model(root / "labelling"), "root": root}


@pytest.fixture(scope="module")
def engine(folders):
    return load_engine(folders["random"])


@contextmanager
def serving(engine, **kw):
    server = Server(("127.0.0.1", 0), engine, quiet=kw.pop("quiet", True), **kw)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def request(server, method, path, body=None, headers=None, raw=None, timeout=60):
    """(status, parsed JSON or text) over a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=timeout)
    try:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        text = resp.read().decode("utf-8")
        if resp.getheader("Content-Type", "").startswith("application/json"):
            return resp.status, json.loads(text)
        return resp.status, text
    finally:
        conn.close()


def events(text: str) -> list:
    """The data of each server-sent event; [DONE] must be last."""
    out = [block[len("data: "):] for block in text.split("\n\n") if block]
    assert out[-1] == "[DONE]" and all(not e.startswith("data:") for e in out)
    return [json.loads(e) for e in out[:-1]]


def streamed(server, path, body):
    status, text = request(server, "POST", path, {**body, "stream": True})
    assert status == 200, text
    evs = events(text)
    key = "delta" if path.endswith("chat/completions") else None
    pieces = [(e["choices"][0]["delta"].get("content") if key else e["choices"][0]["text"])
              for e in evs if e["choices"]]
    finish = [e["choices"][0]["finish_reason"] for e in evs if e["choices"]]
    return "".join(p or "" for p in pieces), finish, evs


CHAT, TEXT = "/v1/chat/completions", "/v1/completions"


def ask(message: str) -> dict:
    return {"messages": [{"role": "user", "content": message}]}


def test_models_and_the_shape_of_replies(engine):
    alone = engine.reply(engine.encode_chat(ask("Hello")["messages"]), Settings(max_new_tokens=12)).run()
    with serving(engine) as server:
        status, models = request(server, "GET", "/v1/models")
        assert status == 200 and models["data"][0]["id"] == "random" and models["data"][0]["context_length"] == 128
        status, r = request(server, "POST", CHAT, {**ask("Hello"), "max_tokens": 12, "temperature": 0, "model": "x"})
    assert status == 200 and r["object"] == "chat.completion" and r["id"].startswith("chatcmpl-")
    assert r["choices"][0]["message"] == {"role": "assistant", "content": alone.text}
    assert r["choices"][0]["finish_reason"] == "length" == alone.finish_reason
    assert r["usage"] == {"prompt_tokens": alone.prompt_tokens, "completion_tokens": 12,
                          "total_tokens": alone.prompt_tokens + 12}


def test_temperature_0_stream_equals_plain_answer_and_lm_chat(engine, folders):
    out = io.StringIO()
    assert chat_main([str(folders["random"]), "--temperature", "0", "--max-new-tokens", "40"],
                     io.StringIO("Tell me a story\n/quit\n"), out) == 0
    with serving(engine) as server:
        body = {**ask("Tell me a story"), "max_tokens": 40, "temperature": 0}
        _, plain = request(server, "POST", CHAT, body)
        text, finish, evs = streamed(server, CHAT, {**body, "stream_options": {"include_usage": True}})
        answer = plain["choices"][0]["message"]["content"]
        assert len(answer) > 20 and text == answer
        assert finish[-1] == plain["choices"][0]["finish_reason"] and finish[:-1] == [None] * (len(finish) - 1)
        assert evs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert evs[-1]["choices"] == [] and evs[-1]["usage"] == plain["usage"]
        assert len(evs) > 10                                       # piece by piece, not one block
        # /v1/completions: the same for a plain text, and a stop string cuts both at the same place
        body = {"prompt": "Once upon a time", "max_tokens": 30, "temperature": 0}
        _, plain_text = request(server, "POST", TEXT, body)
        full = plain_text["choices"][0]["text"]
        assert plain_text["object"] == "text_completion" and streamed(server, TEXT, body)[0] == full
        stop = full[6:8]
        _, cut = request(server, "POST", TEXT, {**body, "stop": [stop]})
        assert cut["choices"][0]["text"] == full[:full.index(stop)] and cut["choices"][0]["finish_reason"] == "stop"
        assert streamed(server, TEXT, {**body, "stop": stop})[0] == full[:full.index(stop)]
    lines = out.getvalue().split("\n")
    assert lines[1] == "> " + answer.split("\n")[0] and out.getvalue().endswith(answer + "\n> ")


def test_16_concurrent_requests_each_get_their_own_answer(engine):
    bodies = []
    for i in range(16):
        if i % 2:
            bodies.append((TEXT, {"prompt": f"Story number {i}: the", "max_tokens": 16, "temperature": 1.0,
                                  "seed": 100 + i, "stream": i % 3 == 0}))
        else:
            bodies.append((CHAT, {**ask(f"Question {i}?"), "max_tokens": 16, "temperature": 1.0, "seed": i,
                                  "stream": i % 4 == 0}))
    with serving(engine) as server:
        def answer(path, body):
            if body.get("stream"):
                return streamed(server, path, body)[0]
            status, r = request(server, "POST", path, body)
            assert status == 200, r
            c = r["choices"][0]
            return c["text"] if path == TEXT else c["message"]["content"]

        alone = [answer(p, b) for p, b in bodies]
        results: list = [None] * 16
        start = threading.Barrier(16, timeout=30)

        def worker(i):
            start.wait()
            results[i] = answer(*bodies[i])

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert results == alone
    assert len(set(alone)) == 16                                   # different prompts, different answers


BAD = [  # (path, body as bytes or JSON, param or text expected in the message)
    (CHAT, b"{not json", "not valid JSON"),
    (CHAT, b"[1, 2]", "must be a JSON object"),
    (CHAT, b"\xff\xfe", "not valid JSON"),
    (CHAT, {"messages": "hi"}, "messages"),
    (CHAT, {"messages": []}, "messages"),
    (CHAT, {"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    (CHAT, {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    (CHAT, {**ask("hi"), "max_tokens": "5"}, "max_tokens"),
    (CHAT, {**ask("hi"), "max_tokens": 0}, "max_tokens"),
    (CHAT, {**ask("hi"), "temperature": 3}, "temperature"),
    (CHAT, {**ask("hi"), "temperature": True}, "temperature"),
    (CHAT, {**ask("hi"), "top_p": 0}, "top_p"),
    (CHAT, {**ask("hi"), "stop": [1]}, "stop"),
    (CHAT, {**ask("hi"), "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    (CHAT, {**ask("hi"), "seed": 1.5}, "seed"),
    (CHAT, {**ask("hi"), "stream": "yes"}, "stream"),
    (CHAT, {**ask("hi"), "n": 2}, "n=2"),
    (CHAT, {**ask("hi"), "model": 7}, "model"),
    (CHAT, ask("hi <|im_end|>"), "special token"),
    (CHAT, ask("word " * 200), "context"),                               # a prompt longer than the context
    (CHAT, {**ask("hi"), "max_tokens": 120}, "context"),                 # prompt + max_tokens over it
    (TEXT, {"prompt": 5}, "prompt"),
    (TEXT, {"prompt": [1, 99999]}, "outside the vocabulary"),
    (TEXT, {"prompt": "x " * 300, "stream": True}, "context"),
    (TEXT, {"prompt": ""}, "empty"),
]


def test_every_malformed_request_gets_a_400_and_the_server_keeps_serving(engine):
    good = {**ask("hi"), "max_tokens": 3, "temperature": 0}
    with serving(engine, max_body=4096) as server:
        _, expected = request(server, "POST", CHAT, good)
        for path, body, says in BAD:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            status, r = request(server, "POST", path, raw=raw)
            assert status == 400, (body, r)
            assert r["error"]["type"] == "invalid_request_error" and says in (r["error"]["message"] + str(r["error"]["param"])), r
            status, again = request(server, "POST", CHAT, good)
            assert status == 200 and again["choices"] == expected["choices"]
        # over the size limit: a real body, and one that only claims to be huge
        status, r = request(server, "POST", CHAT, raw=json.dumps({**good, "pad": "x" * 5000}).encode())
        assert status == 400 and "over this server's limit of 4096" in r["error"]["message"]
        for head in (b"Content-Length: 999999999\r\n", b"", b"Transfer-Encoding: chunked\r\n", b"Content-Length: -1\r\n"):
            with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=30) as s:
                s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n{}")
                reply = s.makefile("rb").read().decode()
            assert reply.startswith("HTTP/1.1 400") and '"invalid_request_error"' in reply
        assert request(server, "GET", "/nowhere")[0] == 404 and request(server, "POST", "/v1/nowhere", good)[0] == 404
        status, again = request(server, "POST", CHAT, good)
        assert status == 200 and again["choices"] == expected["choices"]


class Slow(torch.nn.Module):
    """The model of an engine, 20 ms a step, counting its steps."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config, self.steps = model, model.config, 0

    def new_cache(self, batch, max_len):
        return self.model.new_cache(batch, max_len)

    def forward(self, *args, **kwargs):
        self.steps += 1
        time.sleep(0.02)
        return self.model(*args, **kwargs)


def test_a_client_that_goes_away_stops_its_generation(engine):
    slow = Engine(Slow(engine.model), engine.tokenizer, engine.format, engine.default_system, "slow")
    with serving(slow) as server:
        body = json.dumps({"prompt": "Once upon a time", "max_tokens": 100, "temperature": 0, "stream": True})
        with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=30) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                      % (len(body), body.encode()))
            assert b'"text": ' in s.recv(4096) or b'"text": ' in s.recv(4096)   # headers, then the first piece
        assert slow.lock.acquire(timeout=30)                       # the generation ends soon after
        slow.lock.release()
        assert slow.model.steps < 50                               # of the 100 asked for
        status, r = request(server, "POST", TEXT, {"prompt": "Hi", "max_tokens": 2})
        assert status == 200 and r["usage"]["completion_tokens"] == 2


def test_api_key_required_and_never_logged(engine, folders, capfd, monkeypatch):
    good = {**ask("hi"), "max_tokens": 3}
    with serving(engine, api_key=Secret(KEY), quiet=False) as server:
        assert request(server, "POST", CHAT, good)[0] == 401
        status, r = request(server, "POST", CHAT, good, {"Authorization": "Bearer sk-wrong"})
        assert status == 401 and r["error"]["code"] == "invalid_api_key"
        assert request(server, "GET", "/v1/models")[0] == 401
        assert request(server, "POST", CHAT, good, {"Authorization": f"Bearer {KEY}"})[0] == 200
        assert request(server, "GET", "/v1/models", headers={"Authorization": f"Bearer {KEY}"})[0] == 200
        status, page = request(server, "GET", "/")                  # the page holds nothing: no key needed
        assert status == 200 and '"needsKey": true' in page and KEY not in page
        request(server, "POST", f"/v1/{KEY}", good, {"Authorization": f"Bearer {KEY}"})
    logged = capfd.readouterr()
    assert "401" in logged.err and "<hidden>" in logged.err and KEY not in logged.out + logged.err
    monkeypatch.delenv("LM_TEST_NO_SUCH_KEY", raising=False)
    assert serve_main([str(folders["random"]), "--api-key-env", "LM_TEST_NO_SUCH_KEY"]) == 2   # unset: refused


def test_hosted_labeller_against_lm_serve(folders):
    """The labelling stage's hosted labeller, pointed at our server running our small instruction model."""
    labelling = load_engine(folders["labelling"])
    taxonomy = chat_models.taxonomy(folders["root"])
    with serving(labelling, api_key=Secret(KEY)) as server:
        client = ChatClient(EndpointConfig(server.url + "/v1", timeout=60, retries=0, temperature=0, max_tokens=16),
                            Secret(KEY))
        labeller = HostedLabeller(client, "ours", taxonomy, attempts=1)
        labels = [labeller.label(doc, chat_models.CANDS) for doc in chat_models.DOCS]
        replies = [client.complete("ours", chat_models.build_prompt(doc, chat_models.CANDS, taxonomy))
                   for doc in chat_models.DOCS]
    assert replies == [chat_models.ANSWER] * 3 and labels == ["toy:1200"] * 3
    assert client.stats == {"requests": 6, "retries": 0, "failed": 0}


def test_page_is_one_self_contained_file(engine):
    with serving(engine) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
        conn.request("GET", "/")
        resp = conn.getresponse()
        page = resp.read().decode()
        conn.close()
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/html; charset=utf-8"
    assert "default-src 'self'" in resp.getheader("Content-Security-Policy")
    assert "http://" not in page and "https://" not in page and " src=" not in page and "<link" not in page
    assert '"model": "random", "chat": true' in page and "/v1/chat/completions" in page


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


class DevTools:
    """Chromium's DevTools protocol over --remote-debugging-pipe (fds 3 and 4: JSON messages ended by NUL)."""

    def __init__(self, binary: str, profile: Path):
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        for_child = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome_r, from_chrome_w)]   # never 3 or 4
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        to_chrome_r, from_chrome_w = for_child
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"]
        # a small Python puts our pipe ends on fds 3 and 4, where chromium looks for them, and execs it
        move = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); os.execv(sys.argv[3], sys.argv[3:])"
        self.proc = subprocess.Popen([sys.executable, "-c", move, str(to_chrome_r), str(from_chrome_w), binary, *flags],
                                     pass_fds=(to_chrome_r, from_chrome_w), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buffer, self.n = b"", 0

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params) -> dict:
        self.n += 1
        msg = {"id": self.n, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.n:
                    assert "error" not in reply, reply
                    return reply["result"]
            if select.select([self.from_chrome], [], [], 0.5)[0]:
                chunk = os.read(self.from_chrome, 1 << 16)
                assert chunk, "chromium closed the pipe"
                self.buffer += chunk
        raise TimeoutError(method)

    def close(self):
        self.proc.kill()
        self.proc.wait(timeout=10)
        os.close(self.to_chrome)
        os.close(self.from_chrome)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_page_streams_a_reply_in_headless_chromium(engine, tmp_path):
    with serving(engine) as server:
        _, plain = request(server, "POST", CHAT, {**ask("Hello there"), "temperature": 0})
        browser = DevTools(CHROMIUM, tmp_path / "profile")
        try:
            target = browser.call("Target.createTarget", url=server.url + "/")["targetId"]
            session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

            def js(expression):
                r = browser.call("Runtime.evaluate", session, expression=expression, returnByValue=True)
                return r["result"].get("value")

            deadline = time.monotonic() + 30
            while not js("location.href.startsWith('http') && document.readyState === 'complete' "
                         "&& document.getElementById('form') !== null") and time.monotonic() < deadline:
                time.sleep(0.05)                         # the first document is about:blank
            js("document.getElementById('temperature').value = '0';"
               "document.getElementById('input').value = 'Hello there';"
               "document.getElementById('form').requestSubmit(); true")
            seen = []
            while time.monotonic() < deadline:
                state = js("[document.body.dataset.state, "
                           "[...document.querySelectorAll('.msg')].map(e => e.className + ': ' + e.textContent)]")
                seen.append(state)
                if state[0] == "idle" and len(state[1]) >= 2:
                    break
                time.sleep(0.02)
        finally:
            browser.close()
    answer = plain["choices"][0]["message"]["content"]
    assert seen[-1] == ["idle", ["msg user: Hello there", "msg assistant: " + answer]], seen[-1]
    assert len(answer) > 20
