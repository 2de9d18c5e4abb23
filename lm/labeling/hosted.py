"""A hosted model as a labeller: any OpenAI-compatible chat-completions endpoint, standard library only.

The book labels with five models on OpenRouter through the `openai` package (5 s timeout, 3
attempts per model and record). Here one `ChatClient` talks to one endpoint (OpenRouter, OpenAI,
a local vLLM or llama.cpp server, ...) with `urllib`, and one `HostedLabeller` per model name
asks it for IDs with the book's prompt and rules (`lm.labeling.prompt`). `ask_all` calls the
labellers from threads; the client keeps at most `concurrency` requests in flight.

    POST {url}/chat/completions   {"model": M, "messages": [{"role": "user", "content": PROMPT}]}
    -> {"choices": [{"message": {"content": "medtop:20000842"}}]}

Two layers of retry:
  * the request (`ChatClient.complete`): a timeout, a dropped connection, 429 or 5xx is retried
    up to `retries` times, waiting `backoff * 2**i` seconds (with jitter), or what the server's
    `Retry-After` says, capped at `max_wait`; other statuses (400, 401, 404) fail at once;
  * the answer (`HostedLabeller.label`, the book's): up to `attempts` requests until the reply
    holds a valid candidate ID; after that the answer is None.

The API key is read from the environment variable the user names (never from the command line,
where other users can see it) and held in a `Secret`: its repr is `<hidden>`, every message we
log or raise passes through `Secret.redact` (in case a server echoes it), it is sent only in
the Authorization header, never over plain http except to this machine (127.0.0.1, ::1,
localhost), never across a redirect (redirects are refused: urllib would forward the header to
the new host), and never written anywhere (the answer cache holds document ids, labeller names
and IDs only).
"""
from __future__ import annotations

import email.utils
import http.client
import json
import logging
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Sequence

from lm.cli import option
from lm.data.loaders import Abstract
from lm.errors import ConfigError, LMError
from lm.labeling.labeller import Labeller
from lm.labeling.prompt import build_prompt, parse_answer
from lm.labeling.taxonomy import Taxonomy

log = logging.getLogger(__name__)
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class HostedError(LMError):
    """A request that failed for good (after its retries); the message never holds the key."""


class Secret:
    """A string that does not show itself: `repr`/`str` say <hidden>, pickling is refused."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        """`text` with every occurrence of the secret replaced by <hidden>."""
        return text.replace(self._value, "<hidden>") if self._value else text

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("a Secret cannot be pickled")


def key_from_env(var: str | None) -> Secret | None:
    """The key in environment variable `var` (None: no key, for local servers that need none)."""
    if not var:
        return None
    value = os.environ.get(var)
    if not value:
        raise ConfigError(f"--api-key-env {var}: that environment variable is not set or empty "
                          f"(export {var}=... in the shell that runs this)")
    return Secret(value.strip())


@dataclass
class EndpointConfig:
    url: str                          # base URL (".../v1") or the full ".../chat/completions" URL
    timeout: float = option(5.0, "seconds per request (the book: 5)")
    retries: int = option(4, "extra tries of one request after a timeout, 429 or 5xx")
    backoff: float = option(1.0, "first wait in seconds, doubled after each retry (plus jitter)")
    max_wait: float = option(60.0, "cap on one wait, a server's Retry-After included")
    concurrency: int = option(8, "requests in flight at once on this endpoint")
    temperature: float | None = option(None, "sampling temperature sent with each request (none: not sent, as the book)")
    max_tokens: int | None = option(None, "reply length cap sent with each request (none: not sent, as the book)")

    def validate(self) -> None:
        if self.timeout <= 0 or self.retries < 0 or self.backoff < 0 or self.max_wait < 0 or self.concurrency < 1:
            raise ConfigError(f"endpoint settings out of range: timeout {self.timeout} > 0, retries {self.retries} "
                              f">= 0, backoff {self.backoff} >= 0, max_wait {self.max_wait} >= 0, "
                              f"concurrency {self.concurrency} >= 1")


def completions_url(url: str) -> str:
    """".../v1" -> ".../v1/chat/completions"; a URL already ending so is kept."""
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else url + "/chat/completions"


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None   # urllib then raises HTTPError(code): the key never follows a redirect


class _Retryable(Exception):
    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.reason, self.wait = reason, wait


class ChatClient:
    """Chat completions on one endpoint: timeout, retries with backoff, a concurrency limit."""

    def __init__(self, cfg: EndpointConfig, key: Secret | None = None, sleep=time.sleep):
        cfg.validate()
        self.cfg, self.key, self.sleep = cfg, key, sleep
        self.url = completions_url(cfg.url)
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--url {cfg.url!r}: expected an http(s) URL such as https://openrouter.ai/api/v1")
        local = parts.hostname in LOOPBACK
        if key is not None and parts.scheme == "http" and not local:
            raise ConfigError(f"--url {cfg.url!r}: refusing to send an API key over plain http to "
                              f"{parts.hostname}; use https")
        handlers: list = [_NoRedirect()]
        if local:
            handlers.append(urllib.request.ProxyHandler({}))   # this machine: never through a proxy
        self.opener = urllib.request.build_opener(*handlers)
        self.slots = threading.BoundedSemaphore(cfg.concurrency)
        self.lock = threading.Lock()
        self.stats = {"requests": 0, "retries": 0, "failed": 0}

    def _count(self, key: str) -> None:
        with self.lock:
            self.stats[key] += 1

    def _clean(self, text: str) -> str:
        return self.key.redact(text) if self.key is not None else text

    def _post(self, body: bytes) -> bytes:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.key is not None:
            headers["Authorization"] = "Bearer " + self.key.reveal()
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        self._count("requests")
        try:
            with self.slots, self.opener.open(req, timeout=self.cfg.timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as e:
            status, wait = e.code, retry_after(e.headers.get("Retry-After") if e.headers else None)
            try:
                snippet = e.read(300).decode("utf-8", "replace")
            except (OSError, ValueError):
                snippet = ""
            e.close()
            if status == 429 or 500 <= status < 600:
                raise _Retryable(f"HTTP {status}", wait) from None
            raise HostedError(self._clean(f"{self.url}: HTTP {status}: {snippet.strip()[:200]}")) from None
        except (TimeoutError, socket.timeout):
            raise _Retryable(f"no reply within {self.cfg.timeout:g} s") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, (TimeoutError, socket.timeout)):
                raise _Retryable(f"no reply within {self.cfg.timeout:g} s") from None
            raise _Retryable(f"connection failed ({e.reason})") from None
        except (OSError, http.client.HTTPException) as e:   # reset, closed or cut short mid-reply
            raise _Retryable(f"connection failed ({type(e).__name__})") from None

    def complete(self, model: str, prompt: str) -> str | None:
        """The reply's text (None if it has no choices or no content); HostedError when it gives up."""
        payload: dict = {"model": model, "messages": [{"role": "user", "content": prompt}]}
        if self.cfg.temperature is not None:
            payload["temperature"] = self.cfg.temperature
        if self.cfg.max_tokens is not None:
            payload["max_tokens"] = self.cfg.max_tokens
        body = json.dumps(payload).encode("utf-8")
        for attempt in range(self.cfg.retries + 1):
            try:
                raw = self._post(body)
                break
            except _Retryable as e:
                if attempt == self.cfg.retries:
                    self._count("failed")
                    raise HostedError(self._clean(f"{self.url} ({model}): {e.reason}; gave up after "
                                                  f"{attempt + 1} tries")) from None
                wait = e.wait if e.wait is not None else self.cfg.backoff * 2 ** attempt * (1 + random.random() / 2)
                wait = min(wait, self.cfg.max_wait)
                self._count("retries")
                log.warning(self._clean(f"{model}: {e.reason}; retry {attempt + 1}/{self.cfg.retries} in {wait:.2f} s"))
                self.sleep(wait)
        try:
            reply = json.loads(raw)
            choices = reply.get("choices") if isinstance(reply, dict) else None
            if not choices:
                return None
            content = choices[0].get("message", {}).get("content")
            return content if isinstance(content, str) else None
        except (ValueError, AttributeError, TypeError, IndexError):
            raise HostedError(self._clean(f"{self.url} ({model}): the reply is not a chat completion: "
                                          f"{raw[:120]!r}")) from None


class HostedLabeller(Labeller):
    """One hosted model: the book's prompt, last valid ID, up to `attempts` requests."""

    def __init__(self, client: ChatClient, model: str, taxonomy: Taxonomy, attempts: int = 3, name: str | None = None):
        if attempts < 1:
            raise ConfigError(f"attempts must be >= 1, got {attempts}")
        self.client, self.model, self.taxonomy, self.attempts = client, model, taxonomy, attempts
        self.name = name or f"hosted:{model}"
        self.threads = client.cfg.concurrency

    def label(self, document: Abstract, candidates: Sequence[str]) -> str | None:
        if not candidates:
            return None
        prompt = build_prompt(document, candidates, self.taxonomy)
        for attempt in range(1, self.attempts + 1):
            try:
                answer = parse_answer(self.client.complete(self.model, prompt), self.taxonomy.id_pattern, candidates)
            except HostedError as e:
                log.warning(f"{self.name}, document {document.id}: attempt {attempt}/{self.attempts}: {e}")
                continue
            if answer is not None:
                return answer
            log.info(f"{self.name}, document {document.id}: attempt {attempt}/{self.attempts}: no valid ID")
        return None
