"""The ChatML chat template of Qwen2 / Qwen2.5, as a small Python function (no template engine).

An instruction-tuned model was trained on conversations laid out in one exact format; prompting
it in another format works worse. Qwen's format (ChatML) wraps every message in special tokens:

    <|im_start|>system
    You are a helpful assistant.<|im_end|>
    <|im_start|>user
    What is 2+2?<|im_end|>
    <|im_start|>assistant                        <- add_generation_prompt: the model answers from here

When the first message is not a system message, a default one goes in front. It differs by
model: "You are a helpful assistant." (Qwen2-Instruct, our fixture) or "You are Qwen, created by
Alibaba Cloud. You are a helpful assistant." (Qwen2.5-Instruct). `default_system_from_dir` reads it
from the folder's tokenizer_config.json `chat_template`, so it follows the model.

    >>> apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'

Qwen2.5's template also renders tool calls; we implement plain conversations (system, user and
assistant messages with text content) and refuse the rest by name.

The book's instruction tuning (5.3.3, stage `instruct_sft`) writes a variant, `apply_book_template`:
a newline before every `<|im_end|>`, and the answer right after "assistant" (no newline). GPT-2
has no such special tokens, so there the markers are plain text. `instruct_sft` saves its model
with this template (`BOOK_CHAT_TEMPLATE`, as Jinja in tokenizer_config.json, so `transformers`
renders it too), and `chat_format` tells the three kinds of folder apart: "chatml", "book", or
None (no template: a plain language model, which continues text).
"""
from __future__ import annotations

import os
import re
from typing import Mapping, Sequence

from lm.errors import ConfigError, SpecialTokenError, TokenizerFileError
from lm.tokenizers.gpt2 import GPT2Tokenizer
from lm.tokenizers.hf_json import TOKENIZER_CONFIG, read_tokenizer_config
from lm.utils import atomic_write_json

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
DEFAULT_SYSTEM = "You are a helpful assistant."        # Qwen2-Instruct's (and the fixture's)
QWEN25_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
ROLES = ("system", "user", "assistant")
# The template's default system turn: a string literal '<|im_start|>system\n....<|im_end|>\n'.
_DEFAULT_TURN = re.compile(r"""'<\|im_start\|>system\\n((?:[^'\\]|\\.)*?)<\|im_end\|>\\n'""")


def _check_messages(messages: Sequence[Mapping[str, str]]) -> None:
    if not messages:
        raise ConfigError("the conversation has no messages")
    for n, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ConfigError(f"message {n}: expected an object with role and content, got {type(m).__name__}")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ConfigError(f"message {n}: role {role!r} is not implemented (only {', '.join(ROLES)})")
        if not isinstance(content, str):
            raise ConfigError(f"message {n}: content must be a string, got {type(content).__name__}")
        extra = sorted(set(m) - {"role", "content"})
        if extra:
            raise ConfigError(f"message {n}: {', '.join(extra)} not implemented (tool calls need Qwen's full template)")


def apply_chat_template(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = False,
                        default_system: str | None = DEFAULT_SYSTEM) -> str:
    """The conversation as ChatML text: each message `<|im_start|>{role}\\n{content}<|im_end|>\\n`.

    `default_system` goes in front (as a system message) when the first message is not one;
    None puts nothing there. `add_generation_prompt` appends `<|im_start|>assistant\\n`.
    """
    _check_messages(messages)
    parts = []
    if messages[0]["role"] != "system" and default_system is not None:
        parts.append(f"{IM_START}system\n{default_system}{IM_END}\n")
    for m in messages:
        parts.append(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n")
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts)


# The book's variant as a Jinja chat template (what `instruct_sft` writes to tokenizer_config.json).
BOOK_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '\\n<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.\\n<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if not (loop.first and message['role'] == 'system') %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant' + message['content'] + '\\n<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '\\n<|im_end|>\\n' }}"
    "{%- endif %}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant' }}{%- endif %}")


def apply_book_template(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = False) -> str:
    """The conversation in the book's ChatML-like format (5.3.3), as `BOOK_CHAT_TEMPLATE` renders it.

    >>> apply_book_template([{"role": "user", "content": "2+2?"}], add_generation_prompt=True)
    '<|im_start|>system\\nYou are a helpful assistant.\\n<|im_end|>\\n<|im_start|>user\\n2+2?\\n<|im_end|>\\n<|im_start|>assistant'

    An assistant message is "<|im_start|>assistant{content}\\n<|im_end|>\\n": the form the model
    was trained to write after the generation prompt.
    """
    _check_messages(messages)
    parts = [] if messages[0]["role"] == "system" else [f"{IM_START}system\n{DEFAULT_SYSTEM}\n{IM_END}\n"]
    for m in messages:
        sep = "" if m["role"] == "assistant" else "\n"
        parts.append(f"{IM_START}{m['role']}{sep}{m['content']}\n{IM_END}\n")
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant")
    return "".join(parts)


def chat_format(folder: str | os.PathLike, tokenizer: GPT2Tokenizer) -> str | None:
    """The conversation format a model folder speaks:

    "book"    tokenizer_config.json's chat_template is BOOK_CHAT_TEMPLATE (saved by `instruct_sft`)
    "chatml"  the tokenizer has <|im_start|> and <|im_end|> as special tokens (Qwen2-Instruct);
              a chat template, if any, must be ChatML (`default_system_from_dir` checks it)
    None      no chat template and no ChatML tokens: a plain language model (continuation only)

    Any other chat template is refused (TokenizerFileError): we would render it wrongly.
    """
    template = read_tokenizer_config(folder).get("chat_template")
    if template == BOOK_CHAT_TEMPLATE:
        return "book"
    if IM_START in tokenizer.special_tokens and IM_END in tokenizer.special_tokens:
        default_system_from_dir(folder)
        return "chatml"
    if template is None:
        return None
    raise TokenizerFileError(os.path.join(folder, TOKENIZER_CONFIG),
                             "chat_template is neither ChatML nor the book's format (lm.tokenizers.chat); "
                             "not implemented")


def encode_chat(tokenizer: GPT2Tokenizer, messages: Sequence[Mapping[str, str]],
                add_generation_prompt: bool = False, default_system: str | None = DEFAULT_SYSTEM) -> list[int]:
    """Token ids of the rendered conversation, `<|im_start|>` / `<|im_end|>` as their special ids.

    A message whose content holds a special-token string is refused (SpecialTokenError): it would
    become a real special token, letting text forge turns of the conversation.
    """
    _check_messages(messages)
    for n, m in enumerate(messages):
        for t in tokenizer.special_tokens:
            if isinstance(m.get("content"), str) and t in m["content"]:
                raise SpecialTokenError(f"message {n} contains the special token {t!r}")
    for t in (IM_START, IM_END):
        if t not in tokenizer.special_tokens:
            raise ConfigError(f"the tokenizer has no special token {t!r}: it is not a ChatML (Qwen) tokenizer")
    text = apply_chat_template(messages, add_generation_prompt, default_system)
    return tokenizer.encode(text, allowed_special="all")


def default_system_from_template(template: str) -> str | None:
    """The default system message written in a ChatML `chat_template` (None if it has none)."""
    m = _DEFAULT_TURN.search(template)
    if m is None:
        return None
    return re.sub(r"\\(.)", lambda e: {"n": "\n", "t": "\t"}.get(e.group(1), e.group(1)), m.group(1))


def check_template(template: str) -> str | None:
    """The problem with a chat template's Jinja text that we can see without a template engine, or
    None: every `{{`, `{%`, `{#` closed in order, every quote inside them closed, if/for blocks
    balanced, a loop over the messages and a generation prompt present, and any system turn written as a literal (`'<|im_start|>system\\n...`) a whole
    default system turn. (A template cut inside its default system turn would otherwise read
    as one without a default, silently dropping the system message; the reference library's Jinja
    refuses it as a syntax error.)"""
    blocks, pos = [], 0
    for m in re.finditer(r"\{([{%#])", template):
        if m.start() < pos:
            continue                                          # inside the previous tag
        close = {"{": "}}", "%": "%}", "#": "#}"}[m.group(1)]
        i, quote = m.end(), None
        while i < len(template):                              # scan to the closing delimiter, skipping strings
            c = template[i]
            if quote:
                if c == "\\":
                    i += 1
                elif c == quote:
                    quote = None
            elif c in "'\"" and m.group(1) != "#":
                quote = c
            elif template.startswith(close, i):
                break
            i += 1
        else:
            return f"a {m.group(0)!r} at character {m.start()} is never closed (the template is cut?)"
        tag = template[m.end():i].strip("-+ \t\n")
        word = tag.split(maxsplit=1)[0] if m.group(1) == "%" and tag else ""
        if word in ("if", "for"):
            blocks.append(word)
        elif word in ("endif", "endfor"):
            if not blocks or blocks.pop() != word[3:]:
                return f"{{% {word} %}} at character {m.start()} closes no open block"
        pos = i + len(close)
    if blocks:
        return f"{{% {blocks[-1]} %}} is never closed with {{% end{blocks[-1]} %}} (the template is cut?)"
    for what, pattern in (("a loop over the messages", r"\{%-?\s*for\s+\w+\s+in\s+messages\b"),
                          ("the generation prompt", r"add_generation_prompt[\s\S]*'<\|im_start\|>assistant\\n'")):
        if not re.search(pattern, template):
            return f"it has no {what}: not the ChatML template we implement (cut?)"
    literal = template.count("'<|im_start|>system\\n'")             # the turn written with its content
    defaults = len(_DEFAULT_TURN.findall(template))
    if template.count("'<|im_start|>system\\n") - literal != defaults:
        return "a system turn written as a literal is not a whole '<|im_start|>system\\n...<|im_end|>\\n' string"
    return None


def default_system_from_dir(folder: str | os.PathLike) -> str | None:
    """The default system message of a model folder's chat template (tokenizer_config.json).

    Refuses a template that is not ChatML, or is cut or malformed (`check_template`), with a
    TokenizerFileError; a folder without a chat template gives DEFAULT_SYSTEM.
    """
    template = read_tokenizer_config(folder).get("chat_template")
    if template is None:
        return DEFAULT_SYSTEM
    path = os.path.join(folder, TOKENIZER_CONFIG)
    if not isinstance(template, str) or IM_START not in template or IM_END not in template:
        raise TokenizerFileError(path, "chat_template is not ChatML (<|im_start|> ... <|im_end|>); not implemented")
    problem = check_template(template)
    if problem is not None:
        raise TokenizerFileError(path, f"chat_template: {problem}")
    return default_system_from_template(template)


def write_chat_template(folder: str | os.PathLike, template: str, **settings) -> None:
    """Set `chat_template` (and any other `settings`, e.g. eos_token) in the folder's
    tokenizer_config.json, keeping what is already there; written atomically."""
    config = read_tokenizer_config(folder)
    config.update(settings, chat_template=template)
    atomic_write_json(os.path.join(folder, TOKENIZER_CONFIG), config)
