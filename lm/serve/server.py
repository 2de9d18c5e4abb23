"""The HTTP side of `python -m lm.serve`: standard library only (`http.server`), one model, many clients.

    GET  /                      the chat page (lm/serve/page.py), which streams replies
    GET  /v1/models             the one model served
    POST /v1/chat/completions   a conversation -> the assistant's reply   (lm/serve/protocol.py)
    POST /v1/completions        a text -> its continuation

Each connection gets a thread (`ThreadingHTTPServer`); the model answers one request at a time
(`engine.lock`), so concurrent requests queue and each gets exactly the answer it would get alone.
A stream sends its pieces as server-sent events as the model writes them and ends with
`data: [DONE]`; a client that goes away stops its generation at the next token.

Bad requests never stop the server: a body that is not JSON, a field of the wrong type, a prompt
longer than the context, a body over `max_body` bytes, a missing or chunked Content-Length all get
HTTP 400 with an OpenAI-style error object. With an API key (`--api-key-env NAME`), every /v1
request needs `Authorization: Bearer <key>` (401 otherwise); the key is compared in constant time
and never written to the log. The page itself needs no key (it holds nothing); it asks for one.
"""
from __future__ import annotations

import hmac
import json
import secrets
import socket
import sys
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lm.errors import LMError
from lm.inference.engine import Engine
from lm.labeling.hosted import Secret
from lm.serve.page import render_page
from lm.serve.protocol import (CHAT, TEXT, ApiError, chunk, completion, event, parse_body, parse_request,
                               usage_chunk)

ROUTES = {"/v1/chat/completions": CHAT, "/v1/completions": TEXT}
GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError, socket.timeout)


class Server(ThreadingHTTPServer):
    """A ThreadingHTTPServer that holds the engine and the serving settings for its handlers."""

    daemon_threads = True           # a hung client never keeps the process alive
    allow_reuse_address = True
    request_queue_size = 128        # connections waiting to be accepted (socketserver's 5 resets a burst of 16)

    def __init__(self, address: tuple[str, int], engine: Engine, api_key: Secret | None = None,
                 max_body: int = 1 << 20, max_tokens: int = 512, quiet: bool = False):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.engine, self.api_key, self.max_body, self.max_tokens, self.quiet = engine, api_key, max_body, max_tokens, quiet
        self.created = int(time.time())

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive for JSON replies; streams close the connection
    server_version = "lm-serve"
    timeout = 60                    # seconds a client may take to send its request
    server: Server
    started = False                 # has this request's response begun? (then no error reply can follow)

    # ---------------------------------------------------------------- plumbing
    def log_message(self, format: str, *args) -> None:
        if not self.server.quiet:
            text = f"{self.address_string()} {format % args}"
            key = self.server.api_key
            sys.stderr.write((key.redact(text) if key is not None else text) + "\n")

    def send_response(self, code: int, message: str | None = None) -> None:
        self.started = True
        super().send_response(code, message)

    def send_json(self, status: int, obj: dict, headers: dict | None = None) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def send_error_json(self, e: ApiError) -> None:
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        self.send_json(e.status, e.body(), headers)

    def authorized(self) -> bool:
        """True if no key is set or the request carries it; else a 401 has been sent."""
        key = self.server.api_key
        if key is None:
            return True
        given = self.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.reveal().encode()):
            return True
        self.close_connection = True         # a POST's body is left unread
        self.send_error_json(ApiError(401, "missing or incorrect API key: send the header 'Authorization: Bearer "
                                           "<key>'", code="invalid_api_key"))
        return False

    def read_body(self) -> bytes:
        """The request body, at most max_body bytes (ApiError 400 otherwise; the connection is then
        closed, since what is left of the body is never read)."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise ApiError(400, "send the body with a Content-Length (Transfer-Encoding is not supported)")
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            self.close_connection = True
            raise ApiError(400, f"a JSON body with a valid Content-Length is required (got {length!r})")
        n = int(length)
        if n > self.server.max_body:
            self.close_connection = True
            raise ApiError(400, f"the body has {n} bytes, over this server's limit of {self.server.max_body}")
        data = self.rfile.read(n)
        if len(data) < n:
            self.close_connection = True
            raise ConnectionResetError("the client sent less than its Content-Length")
        return data

    # ---------------------------------------------------------------- routes
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            page = render_page(self.server.engine, needs_key=self.server.api_key is not None).encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.send_header("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; "
                                                        "style-src 'unsafe-inline'")
            self.end_headers()
            self.wfile.write(page)
        elif path == "/v1/models":
            if self.authorized():
                model = {"id": self.server.engine.name, "object": "model", "created": self.server.created,
                         "owned_by": "lm", "context_length": self.server.engine.context,
                         "chat_format": self.server.engine.format}
                self.send_json(200, {"object": "list", "data": [model]})
        else:
            self.send_error_json(ApiError(404, f"no route GET {path}", code="not_found"))

    def do_POST(self) -> None:
        self.started = False
        path = self.path.split("?", 1)[0]
        kind = ROUTES.get(path)
        try:
            if kind is None:
                self.close_connection = True
                raise ApiError(404, f"no route POST {path} (try /v1/chat/completions or /v1/completions)",
                               code="not_found")
            if not self.authorized():
                return
            job = parse_request(parse_body(self.read_body()), kind, self.server.engine, self.server.max_tokens)
            (self.stream if job.stream else self.answer)(job)
        except ApiError as e:
            self.send_error_json(e)
        except GONE:
            self.close_connection = True
            self.log_message("client went away")
        except LMError as e:                 # e.g. a sampling error: the request's fault, reported as such
            self.send_error_json(ApiError(400, str(e)))
        except Exception:                    # a bug: say so (500), log it, keep serving
            self.close_connection = True
            self.log_message("internal error:\n%s", traceback.format_exc())
            if not self.started:
                self.send_error_json(ApiError(500, "internal error (see the server's log)", kind="server_error"))

    def answer(self, job) -> None:
        engine, rid = self.server.engine, ("chatcmpl-" if job.kind == CHAT else "cmpl-") + secrets.token_hex(12)
        with engine.lock:
            reply = engine.reply(job.prompt_ids, job.settings).run()
        self.send_json(200, completion(job.kind, rid, int(time.time()), engine.name, reply.text, reply.finish_reason,
                                       reply.prompt_tokens, reply.completion_tokens))

    def stream(self, job) -> None:
        engine, created = self.server.engine, int(time.time())
        rid = ("chatcmpl-" if job.kind == CHAT else "cmpl-") + secrets.token_hex(12)
        reply = engine.reply(job.prompt_ids, job.settings)     # checks the request before the 200 goes out
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if job.kind == CHAT:
            self.send_event(chunk(job.kind, rid, created, engine.name, None, role=True))
        try:
            with engine.lock:
                for piece in reply:
                    self.send_event(chunk(job.kind, rid, created, engine.name, piece))
        except LMError as e:                 # the headers are out: the error goes as an event
            self.send_event(ApiError(400, str(e)).body())
        else:
            self.send_event(chunk(job.kind, rid, created, engine.name, None, reply.finish_reason))
            if job.include_usage:
                self.send_event(usage_chunk(job.kind, rid, created, engine.name, reply.prompt_tokens,
                                            reply.completion_tokens))
        self.wfile.write(event("[DONE]"))

    def send_event(self, obj: dict) -> None:
        self.wfile.write(event(obj))
        self.wfile.flush()
