"""The OpenAI API's shapes: a request body checked field by field, and the replies, plain or streamed.

    POST /v1/chat/completions  {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 50,
                                "temperature": 0.7, "top_p": 0.9, "stop": ["\\n"], "seed": 1, "stream": true}
    POST /v1/completions       {"prompt": "Once upon a time", ...the same sampling fields}

`parse_request` turns a body into a `Job` (the prompt's token ids, the engine's `Settings`, stream
or not) or raises `ApiError(400, ...)` naming the field: a body that is not a JSON object, a field
of the wrong type or out of range, a prompt that does not fit the context. Fields we do not
implement that would change the answer (n > 1, logprobs, tools, echo, suffix) are refused rather
than ignored; fields that change nothing here (user, model, ...) are accepted. `stop` strings are
cut from the text as OpenAI does; `max_tokens` defaults to what the context leaves (capped by the
server's `--max-tokens`).

The replies: `completion` (one JSON object, with `usage` token counts) and `chunk` (one
server-sent event of a stream; the stream ends with `data: [DONE]`). Errors are
`{"error": {"message", "type", "param", "code"}}`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from lm.errors import ConfigError
from lm.inference.engine import Engine, Settings

CHAT, TEXT = "chat.completion", "text_completion"     # the two kinds of request, by their object names
MAX_STOPS = 4                                          # OpenAI's limit on `stop` strings
REFUSED = {"n": (None, 1), "logprobs": (None, False), "top_logprobs": (None, 0), "echo": (None, False),
           "suffix": (None, ""), "best_of": (None, 1), "tools": (None, []), "functions": (None, []),
           "tool_choice": (None, "none"), "function_call": (None, "none")}


class ApiError(Exception):
    """An HTTP error with an OpenAI-style body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Job:
    kind: str                 # CHAT or TEXT
    prompt_ids: list[int]     # what the model reads
    settings: Settings        # how it answers
    stream: bool              # server-sent events (True) or one JSON reply
    include_usage: bool       # a stream's last chunk carries `usage` (stream_options.include_usage)


def parse_body(raw: bytes) -> dict:
    """The request body as a JSON object (ApiError 400 otherwise)."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ApiError(400, f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object, got {type(body).__name__}")
    return body


def _number(body: dict, name: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    x = body.get(name)
    if x is None:
        return default
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) \
            or x < low or x > high or (low_open and x == low):
        raise ApiError(400, f"{name} must be a number in {'(' if low_open else '['}{low:g}, {high:g}], got {x!r}", name)
    return float(x)


def _integer(body: dict, name: str, low: int | None = None) -> int | None:
    x = body.get(name)
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, int) or (low is not None and x < low):
        raise ApiError(400, f"{name} must be an integer{f' >= {low}' if low is not None else ''}, got {x!r}", name)
    return x


def _boolean(body: dict, name: str) -> bool:
    x = body.get(name, False)
    if x is None:
        return False
    if not isinstance(x, bool):
        raise ApiError(400, f"{name} must be true or false, got {x!r}", name)
    return x


def _stops(body: dict) -> list[str]:
    x = body.get("stop")
    if x is None:
        return []
    stops = [x] if isinstance(x, str) else x
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > MAX_STOPS:
        raise ApiError(400, f"stop must be a non-empty string or a list of at most {MAX_STOPS} of them, got {x!r}",
                       "stop")
    return stops


def _content(content: object, n: int) -> str:
    """A message's content: a string, or a list of text parts ({"type": "text", "text": ...})."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise ApiError(400, f"messages[{n}].content must be a string or a list of text parts, got {content!r}"[:300],
                   f"messages[{n}].content")


def _messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list of {role, content} objects", "messages")
    out = []
    for n, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ApiError(400, f"messages[{n}] must be an object, got {type(m).__name__}", f"messages[{n}]")
        if m.get("role") not in ("system", "user", "assistant"):
            raise ApiError(400, f"messages[{n}].role must be system, user or assistant, got {m.get('role')!r}",
                           f"messages[{n}].role")
        if m.get("tool_calls") or m.get("function_call"):
            raise ApiError(400, f"messages[{n}]: tool calls are not implemented", f"messages[{n}]")
        out.append({"role": m["role"], "content": _content(m.get("content"), n)})
    return out


def _prompt(body: dict, engine: Engine) -> list[int]:
    """/v1/completions' prompt: a string, a list holding one string, or a list of token ids."""
    p = body.get("prompt")
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
        p = p[0]
    if isinstance(p, str):
        return engine.encode_text(p)
    if isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
        bad = [t for t in p if not 0 <= t < engine.tokenizer.vocab_size]
        if bad:
            raise ApiError(400, f"prompt token id {bad[0]} is outside the vocabulary (0..{engine.tokenizer.vocab_size - 1})",
                           "prompt")
        return list(p)
    raise ApiError(400, "prompt must be a non-empty string or a list of token ids (one prompt per request)", "prompt")


def parse_request(body: dict, kind: str, engine: Engine, max_tokens_cap: int) -> Job:
    """A checked request: its prompt's token ids and the settings to answer with (ApiError 400)."""
    for name, allowed in REFUSED.items():
        if name in body and body[name] not in allowed:
            raise ApiError(400, f"{name}={body[name]!r} is not implemented by this server", name)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, f"model must be a string, got {model!r}", "model")
    stream = _boolean(body, "stream")
    options = body.get("stream_options")
    if options is not None and not (isinstance(options, dict) and isinstance(options.get("include_usage", False), bool)):
        raise ApiError(400, "stream_options must be an object like {\"include_usage\": true}", "stream_options")
    settings = Settings(temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
                        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
                        top_k=_integer(body, "top_k", low=0) or 0,
                        presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0),
                        frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
                        stop=_stops(body), seed=_integer(body, "seed"))
    try:
        ids = engine.encode_chat(_messages(body)) if kind == CHAT else _prompt(body, engine)
    except ConfigError as e:                     # a bad message, a special token in the text, no chat template
        raise ApiError(400, str(e), "messages" if kind == CHAT else "prompt") from None
    asked = _integer(body, "max_completion_tokens", low=1)
    asked = _integer(body, "max_tokens", low=1) if asked is None else asked
    room = None if engine.context is None else engine.context - len(ids)
    if room is not None and room < 1:
        raise ApiError(400, f"the prompt has {len(ids)} tokens; this model's context is {engine.context} tokens",
                       "messages" if kind == CHAT else "prompt", "context_length_exceeded")
    if asked is not None and room is not None and asked > room:
        raise ApiError(400, f"this model's context is {engine.context} tokens, but {len(ids) + asked} were asked for "
                            f"({len(ids)} in the prompt, {asked} for the reply); ask for fewer", "max_tokens",
                       "context_length_exceeded")
    settings.max_new_tokens = asked if asked is not None else min(max_tokens_cap, room or max_tokens_cap)
    return Job(kind, ids, settings, stream, bool(options and options.get("include_usage")))


# --------------------------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------------------------

def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(kind: str, rid: str, created: int, model: str, text: str, finish: str | None,
               prompt_tokens: int, completion_tokens: int) -> dict:
    """The whole answer as one JSON object."""
    if kind == CHAT:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    return {"id": rid, "object": kind, "created": created, "model": model, "choices": [choice],
            "usage": usage(prompt_tokens, completion_tokens)}


def chunk(kind: str, rid: str, created: int, model: str, text: str | None, finish: str | None = None,
          role: bool = False) -> dict:
    """One event of a stream: a piece of text, or (text None) the end with its finish_reason."""
    if kind == CHAT:
        delta = {"role": "assistant", "content": ""} if role else {} if text is None else {"content": text}
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [choice]}
    choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
    return {"id": rid, "object": TEXT, "created": created, "model": model, "choices": [choice]}


def usage_chunk(kind: str, rid: str, created: int, model: str, prompt_tokens: int, completion_tokens: int) -> dict:
    """The extra last event of a stream asked for with stream_options.include_usage."""
    obj = "chat.completion.chunk" if kind == CHAT else TEXT
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [],
            "usage": usage(prompt_tokens, completion_tokens)}


def event(obj: dict | str) -> bytes:
    """A server-sent event: `data: <json>` and a blank line."""
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n".encode("utf-8")
