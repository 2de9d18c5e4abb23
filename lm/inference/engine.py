"""One engine for talking to a language model: `python -m lm.chat` and `python -m lm.serve` both use it.

An `Engine` holds a causal LM, its tokenizer and the conversation format of its folder
(`lm.tokenizers.chat.chat_format`: Qwen's ChatML, the book's variant, or none). It turns a
conversation (or a plain text) into token ids, and a prompt into a `Reply`: an iterator over
pieces of text, made token by token through the one generation path (`stream_ids`, KV cache),
which ends where it should:

    a stop id       end of text / end of turn (<|endoftext|>, <|im_end|>, config's eos_token_id):
                    counted, not part of the text          finish_reason "stop"
    a stop string   the caller's `stop`, and the book format's "\\n<|im_end|>" (plain text for
                    GPT-2): the text ends just before it    finish_reason "stop"
    the limit       max_new_tokens                          finish_reason "length"

Bytes are decoded incrementally (a character split over two tokens comes out whole), and text
that could be the start of a stop string is held back until it is known not to be one, so the
pieces joined are exactly `reply.text`, streamed or not. The text ends where `first_stop` (shared
with the batch helper, `lm.inference.stops`) finds a stop string.

    >>> engine = Engine(model, tok, chat_format="chatml")                                # doctest: +SKIP
    >>> ids = engine.encode_chat([{"role": "user", "content": "Hi"}])                    # doctest: +SKIP
    >>> reply = engine.reply(ids, Settings(max_new_tokens=50, temperature=0.7, seed=0))  # doctest: +SKIP
    >>> for piece in reply: print(piece, end="", flush=True)                              # doctest: +SKIP
    >>> reply.finish_reason, reply.prompt_tokens, reply.completion_tokens                 # doctest: +SKIP

`engine.lock` serialises generation for callers on several threads (the server): one reply is
made at a time, each exactly as it would be alone.
"""
from __future__ import annotations

import codecs
import math
import threading
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

import torch

from lm.errors import ConfigError, SpecialTokenError
from lm.inference.stops import first_stop
from lm.inference.generate import stream_ids
from lm.inference.sampling import SamplingConfig
from lm.models.auto import context_length
from lm.tokenizers.chat import DEFAULT_SYSTEM, IM_END, IM_START, apply_book_template, encode_chat
from lm.tokenizers.gpt2 import EOT, GPT2Tokenizer

FORMATS = (None, "chatml", "book")
BOOK_STOPS = ("\n" + IM_END, IM_END)     # the book format ends an answer with "\n<|im_end|>"


class ContextError(ConfigError):
    """A prompt (with the room asked for the reply) does not fit the model's context."""


@dataclass
class Settings:
    max_new_tokens: int = 256             # most tokens in one reply
    temperature: float = 0.0              # 0: greedy (always the most probable token); > 0: sample
    top_k: int = 0                        # sample among the k most probable tokens (0: no limit)
    top_p: float = 1.0                    # ... among the fewest tokens holding this probability (1: no limit)
    presence_penalty: float = 0.0         # subtracted from the logit of every token already in the reply
    frequency_penalty: float = 0.0        # ... times the number of times it occurs there
    stop: list[str] = field(default_factory=list)   # strings that end the reply (not part of it)
    seed: int | None = None               # seeds this reply's draws (None: torch's global generator)

    def validate(self) -> None:
        def number(x) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
        if not isinstance(self.max_new_tokens, int) or isinstance(self.max_new_tokens, bool) or self.max_new_tokens < 0:
            raise ConfigError(f"max_new_tokens must be an integer >= 0, got {self.max_new_tokens!r}")
        if not number(self.temperature) or self.temperature < 0:
            raise ConfigError(f"temperature must be a number >= 0, got {self.temperature!r}")
        if not number(self.top_p) or not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise ConfigError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not number(getattr(self, name)):
                raise ConfigError(f"{name} must be a number, got {getattr(self, name)!r}")
        if not isinstance(self.stop, list) or not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError(f"stop must be a list of non-empty strings, got {self.stop!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")

    def sampling(self) -> SamplingConfig | None:
        """The generation path's sampling settings; None (greedy) at temperature 0."""
        if self.temperature == 0:
            return None
        return SamplingConfig(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                              presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty)


class Engine:
    """A model, its tokenizer and its conversation format, ready to answer.

    chat_format:     "chatml" (Qwen), "book" (instruct_sft's), or None (continuation only)
    default_system:  the system message put first when a ChatML conversation has none
    name:            what the server calls the model
    """

    def __init__(self, model: torch.nn.Module, tokenizer: GPT2Tokenizer, chat_format: str | None = None,
                 default_system: str | None = DEFAULT_SYSTEM, name: str = "model"):
        if chat_format not in FORMATS:
            raise ConfigError(f"chat_format must be one of {FORMATS}, got {chat_format!r}")
        self.model, self.tokenizer, self.format = model.eval(), tokenizer, chat_format
        self.default_system, self.name = default_system, name
        self.context = context_length(model.config)
        self.lock = threading.Lock()
        specials = tokenizer.special_tokens
        # Markers the tokenizer has as special tokens are read as their ids (Qwen), else as text (GPT-2).
        self.markers = {t for t in (IM_START, IM_END) if t in specials}
        eos = getattr(model.config, "eos_token_id", None)
        stop = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
        stop |= {specials[t] for t in (EOT, IM_END) if t in specials}
        self.stop_strings: tuple[str, ...] = ()
        if chat_format == "book":      # the answer ends with the *text* "\n<|im_end|>": cut there
            stop.discard(specials.get(IM_END))
            self.stop_strings = BOOK_STOPS
        self.stop_ids = sorted(i for i in stop if i is not None and 0 <= i < tokenizer.vocab_size)
        self.device = next(model.parameters()).device

    # ---------------------------------------------------------------- prompts
    def encode_chat(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """Token ids of a conversation, ending with the generation prompt (the assistant's turn).

        ConfigError for a model without a chat format or a malformed message; SpecialTokenError
        when a message holds a special token or a turn marker (it could forge turns)."""
        if self.format is None:
            raise ConfigError(f"{self.name} has no chat template (a plain language model): send a text to "
                              "continue instead (/v1/completions)")
        if self.format == "chatml":
            return encode_chat(self.tokenizer, messages, add_generation_prompt=True, default_system=self.default_system)
        text = apply_book_template(messages, add_generation_prompt=True)    # checks the messages
        forbidden = {*self.tokenizer.special_tokens, IM_START, IM_END}
        for n, m in enumerate(messages):
            for t in forbidden:
                if t in m["content"]:
                    raise SpecialTokenError(f"message {n} contains {t!r}, a marker of the conversation format")
        return self.tokenizer.encode(text, allowed_special=self.markers)

    def encode_text(self, text: str) -> list[int]:
        """Token ids of a plain text to continue (a special token in it is refused: SpecialTokenError)."""
        if not isinstance(text, str):
            raise ConfigError(f"the prompt must be a string, got {type(text).__name__}")
        ids = self.tokenizer.encode(text)
        if not ids:
            raise ConfigError("the prompt is empty")
        return ids

    def check_fits(self, n_prompt: int, max_new_tokens: int) -> None:
        """ContextError unless a prompt of n_prompt tokens plus max_new_tokens fit the context."""
        if self.context is not None and n_prompt + max_new_tokens > self.context:
            raise ContextError(f"the model's context is {self.context} tokens, but the prompt has {n_prompt} "
                               f"and {max_new_tokens} more were asked for the reply")

    def fit_history(self, messages: list[dict], max_new_tokens: int) -> tuple[list[dict], int]:
        """The newest part of a conversation that leaves `max_new_tokens` of room in the context.

        A leading system message stays; the oldest turns go first (a user message with the answer
        after it). Returns (messages kept, number dropped); ContextError when the last message
        alone does not fit."""
        system = list(messages[:1]) if messages and messages[0].get("role") == "system" else []
        rest, dropped = list(messages[len(system):]), 0
        while True:
            n = len(self.encode_chat(system + rest))
            if self.context is None or n + max_new_tokens <= self.context:
                return system + rest, dropped
            if len(rest) <= 1:
                self.check_fits(n, max_new_tokens)
            k = 2 if len(rest) > 2 and rest[1].get("role") == "assistant" else 1
            rest, dropped = rest[k:], dropped + k

    # ---------------------------------------------------------------- replies
    def reply(self, prompt_ids: Sequence[int], settings: Settings, generator: torch.Generator | None = None) -> "Reply":
        """A `Reply` to `prompt_ids` (nothing runs until it is iterated). Checks the settings and
        that the prompt and max_new_tokens fit the context (ConfigError / ContextError)."""
        settings.validate()
        if not prompt_ids:
            raise ConfigError("the prompt has no tokens")
        self.check_fits(len(prompt_ids), settings.max_new_tokens)
        if generator is None and settings.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(settings.seed)
        return Reply(self, list(prompt_ids), settings, generator)


class Reply:
    """One answer being made. Iterate for its pieces of text; afterwards `text`, `finish_reason`
    ("stop", "length"; None if the iteration was cut short), `prompt_tokens` and
    `completion_tokens` (every token generated, a stop token included)."""

    def __init__(self, engine: Engine, prompt_ids: list[int], settings: Settings, generator: torch.Generator | None):
        self.engine, self.prompt_ids, self.settings, self.generator = engine, prompt_ids, settings, generator
        self.prompt_tokens, self.completion_tokens = len(prompt_ids), 0
        self.text, self.finish_reason = "", None
        self.ids: list[int] = []

    def __iter__(self) -> Iterator[str]:
        e, s = self.engine, self.settings
        stops = [*e.stop_strings, *s.stop]
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        steps = stream_ids(e.model, self.prompt_ids, s.max_new_tokens, sampling=s.sampling(),
                           stop_token_ids=e.stop_ids, generator=self.generator, vocab_limit=e.tokenizer.vocab_size)
        stop_ids = set(e.stop_ids)
        full, sent, cut = "", 0, None      # text so far, how much of it was handed out, where a stop string starts
        try:
            for t in steps:
                self.completion_tokens += 1
                self.ids.append(t)
                if t in stop_ids:
                    self.finish_reason = "stop"
                    break
                full += decoder.decode(e.tokenizer.decode_bytes([t]))
                cut = first_stop(full, stops, sent)
                if cut is not None:
                    self.finish_reason = "stop"
                    break
                safe = len(full) - held_back(full, stops)
                if safe > sent:
                    self.text = full[:safe]
                    yield full[sent:safe]
                    sent = safe
            else:
                self.finish_reason = "length"
        finally:
            steps.close()
        full = full[:cut] if cut is not None else full + decoder.decode(b"", final=True)
        self.text = full
        if len(full) > sent:
            yield full[sent:]

    def run(self) -> "Reply":
        """Generate the whole reply (no streaming); returns self."""
        for _ in self:
            pass
        return self


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many characters at the end of `text` could still be the start of a stop string.

    >>> held_back("Sure.\\n<|im", ["\\n<|im_end|>"]), held_back("Sure.", ["\\n<|im_end|>"])
    (5, 0)
    """
    for k in range(min(len(text), max((len(s) - 1 for s in stops), default=0)), 0, -1):
        if any(s.startswith(text[-k:]) for s in stops):
            return k
    return 0
