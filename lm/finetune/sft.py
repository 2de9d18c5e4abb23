"""Supervised fine-tuning (5.3): teach a language model to answer a prompt with a completion.

An SFT example is a (prompt, completion) pair. The model reads both as one sequence,

    ids     = prompt ids + completion ids + [EOS]
    targets = IGNORE on every prompt position, the completion ids + EOS after it

so the loss (next-token cross-entropy, the same as pretraining) is taken on the completion only:
the model learns to *answer*, not to write prompts. Which tokens are trained on is decided by
**position** (how many prompt tokens there are), never by comparing ids with the padding id: a
completion token that happens to equal the pad id is still trained on (tests/finetune/test_sft.py checks
this against the reference library's gradients, fixture `gpt2_sft_step`).

Batches are padded on the right to the longest example of the batch (dynamic length,
`lm.training.batches.pad_right`), with an attention mask of 0 and no loss on the padding. Training is the one engine's loop
(`lm.training.engine.train` with its default `lm_loss`); evaluation generates greedily through the one
completion helper (`lm.inference.complete`), a batch of prompts at a time, and compares the answer
with the reference after the book's normalisation (strip, lower case, runs of whitespace -> one
space): exact match.

    >>> train_ex = SFTExamples([("2+2=", "4"), ("3+3=", "6")], tok, eos_id=tok.eot_id)   # doctest: +SKIP
    >>> train(model, train_ex, val_ex, TrainConfig(lr=1e-4, epochs=2), "runs/sft")        # doctest: +SKIP
    >>> answers = generate_completions(model, tok, ["5+5="], max_new_tokens=4, eos_id=tok.eot_id)  # doctest: +SKIP

Longer than the model's context (`n_positions`): we truncate, with one warning per dataset,
rather than fail. Training: the prompt is cut **from the left** (its end, next to the answer,
matters most); a completion so long that the prompt would keep fewer than half the context is cut
from the right instead (that example then trains without its EOS). Generation: the prompt is cut
from the left to leave room for `max_new_tokens`. `overflow="error"` raises ConfigError instead.

The templates of the book's two SFT programs are here too: emotion as text generation (5.3.2)
and the ChatML-style instruction format (5.3.3). Any tokenizer with `encode(str) -> ids` and
`decode(ids) -> str` works, with its own EOS id (GRPO's warm-up reuses this module). For GPT-2
the ChatML markers are plain text; a tokenizer that has them as special tokens (Qwen2's) reads
them as their single ids through `chatml_tokenizer`, and its `<|im_end|>` then ends the answer
(`chatml_stop_id`): the completion "{solution}\n<|im_end|>" already ends with it, so no EOS is added.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lm.errors import ConfigError
from lm.inference.complete import complete
from lm.models.auto import context_length
from lm.models.fast_linear import linear
from lm.training.batches import IGNORE_INDEX, pad_right
from lm.training.engine import lm_loss

# 5.3.2: the emotion of a text as a one-word completion (label + EOS, no leading space).
EMOTION_TEMPLATE = "Predict the emotion for the following text: {text}\nEmotion:"

# 5.3.3: the book's ChatML-like format, written as plain text (these are not special tokens for
# GPT-2). The prompt ends right after "assistant", with no newline; the completion is
# "{solution}\n<|im_end|>" followed by EOS, and generation stops at "<|im_end|>".
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
CHATML_TEMPLATE = ("<|im_start|>system\nYou are a helpful assistant.\n<|im_end|>\n"
                   "<|im_start|>user\n{instruction}\n<|im_end|>\n<|im_start|>assistant")


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass(frozen=True)
class Pair:
    prompt: str       # what the model reads (no loss)
    completion: str   # what it learns to write after the prompt (EOS is added by the tokenizing step)


def emotion_pair(text: str, label: str) -> Pair:
    """The book's emotion example: prompt from EMOTION_TEMPLATE, completion = the label."""
    if not text.strip():
        raise ConfigError("emotion text is empty")
    if not label.strip():
        raise ConfigError(f"emotion label is empty for text {text[:60]!r}")
    return Pair(EMOTION_TEMPLATE.format(text=text), label.strip())


def instruct_pair(instruction: str, solution: str) -> Pair:
    """The book's instruction example: ChatML-style prompt, completion = solution + newline + <|im_end|>."""
    if not instruction.strip():
        raise ConfigError("instruction is empty")
    return Pair(CHATML_TEMPLATE.format(instruction=instruction), f"{solution}\n{IM_END}")


class _ChatMLEncoding:
    """A tokenizer whose `encode` reads the ChatML markers it has as special tokens as their ids."""

    def __init__(self, tokenizer, markers: set[str]):
        self.tokenizer, self.markers = tokenizer, markers

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, allowed_special=self.markers)

    def __getattr__(self, name: str):               # decode, vocab_size, special_tokens, ...
        return getattr(self.tokenizer, name)


def chatml_tokenizer(tokenizer):
    """`tokenizer` for the ChatML-style template. Where `<|im_start|>` / `<|im_end|>` are special
    tokens (Qwen2's tokenizer), the markers written in the template become their single ids, as the
    model met them in its chat training (plain `encode` refuses special-token text); elsewhere
    (GPT-2: no such tokens) the markers are plain text and `tokenizer` is returned unchanged."""
    specials = getattr(tokenizer, "special_tokens", {})
    markers = {t for t in (IM_START, IM_END) if t in specials}
    return _ChatMLEncoding(tokenizer, markers) if markers else tokenizer


def chatml_stop_id(tokenizer, eos_id: int) -> int:
    """The id that ends an answer in the ChatML-style template: `<|im_end|>` where the tokenizer
    has it as a special token (Qwen2), else `eos_id` (GPT-2, after the plain-text marker)."""
    return getattr(tokenizer, "special_tokens", {}).get(IM_END, eos_id)


def normalize(text: str) -> str:
    """The book's normalisation before exact match: strip, lower case, collapse whitespace.

    >>> normalize("  Joy \\n and  ME ")
    'joy and me'
    """
    return " ".join(text.strip().lower().split())


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of predictions equal to their reference after `normalize`."""
    if len(predictions) != len(references) or not references:
        raise ConfigError(f"exact_match needs as many predictions as references (> 0), got "
                          f"{len(predictions)} and {len(references)}")
    return sum(normalize(p) == normalize(r) for p, r in zip(predictions, references)) / len(references)


# --------------------------------------------------------------------------------------------
# Fitting a pair into the context
# --------------------------------------------------------------------------------------------

def fit_pair(prompt: list[int], completion: list[int], max_len: int | None) -> tuple[list[int], list[int], bool]:
    """Cut (prompt, completion) ids to at most `max_len` tokens together; returns them and whether
    anything was cut. The prompt loses tokens on the left first, but keeps at least
    min(len(prompt), max_len // 2); the completion loses tokens on the right only beyond that.

    >>> fit_pair([1, 2, 3, 4], [7, 8], 5)
    ([2, 3, 4], [7, 8], True)
    >>> fit_pair([1, 2, 3, 4], [5, 6, 7, 8, 9, 10], 6)
    ([2, 3, 4], [5, 6, 7], True)
    """
    if max_len is None or len(prompt) + len(completion) <= max_len:
        return prompt, completion, False
    keep_prompt = max(max_len - len(completion), min(len(prompt), max_len // 2))
    keep_prompt = max(keep_prompt, 1) if prompt else 0
    prompt = prompt[len(prompt) - keep_prompt:]
    return prompt, completion[:max_len - len(prompt)], True


def _context_of(model: torch.nn.Module) -> int | None:
    config = getattr(model, "config", None)
    return context_length(config) if config is not None else None


# --------------------------------------------------------------------------------------------
# Examples for the engine
# --------------------------------------------------------------------------------------------

class SFTExamples:
    """Tokenized prompt/completion pairs; `collate` makes right-padded batches for the engine.

    pairs:       `Pair`s or (prompt, completion) tuples
    tokenizer:   encode/decode; prompt and completion are encoded separately (as the book does)
    eos_id:      appended to every completion, so the model learns to stop (unless the completion's
                 ids already end with it: Qwen2's "<|im_end|>" through `chatml_tokenizer`)
    pad_id:      fills the padding (default eos_id); never decides what is trained on
    context:     the model's n_positions: a sequence may have context + 1 tokens (the last one is
                 only a target); longer pairs are cut as `fit_pair` says, with one warning
    overflow:    "truncate" (default) or "error"
    train_on_prompt: also train on the prompt tokens (the TRL SFT step before GRPO does this)

    >>> ex = SFTExamples.from_token_ids([[5, 6, 7, 0], [5, 9]], prompt_lengths=[2, 1], pad_id=0)
    >>> b = ex.collate([0, 1])
    >>> b["input_ids"].tolist(), b["targets"].tolist()
    ([[5, 6, 7], [5, 0, 0]], [[-100, 7, 0], [9, -100, -100]])
    """

    def __init__(self, pairs: Sequence[Pair | tuple[str, str]], tokenizer: Tokenizer, eos_id: int,
                 pad_id: int | None = None, context: int | None = None, overflow: str = "truncate",
                 train_on_prompt: bool = False):
        sequences, prompt_lengths = [], []
        for i, pair in enumerate(pairs):
            prompt, completion = pair if isinstance(pair, tuple) else (pair.prompt, pair.completion)
            p, c = list(tokenizer.encode(prompt)), list(tokenizer.encode(completion))
            if not c or c[-1] != eos_id:
                c.append(eos_id)
            if not p:
                raise ConfigError(f"example {i}: the prompt encodes to no tokens")
            sequences.append(p + c)
            prompt_lengths.append(len(p))
        self._init(sequences, prompt_lengths, eos_id if pad_id is None else pad_id, context, overflow,
                   train_on_prompt)

    @classmethod
    def from_token_ids(cls, sequences: Sequence[Sequence[int]], prompt_lengths: Sequence[int], pad_id: int,
                       context: int | None = None, overflow: str = "truncate",
                       train_on_prompt: bool = False) -> "SFTExamples":
        """Examples from token ids already made: sequence i = prompt (its first prompt_lengths[i] ids)
        + completion (EOS included if wanted)."""
        self = cls.__new__(cls)
        self._init([list(s) for s in sequences], list(prompt_lengths), pad_id, context, overflow, train_on_prompt)
        return self

    def _init(self, sequences, prompt_lengths, pad_id, context, overflow, train_on_prompt) -> None:
        if overflow not in ("truncate", "error"):
            raise ConfigError(f"overflow must be 'truncate' or 'error', got {overflow!r}")
        if len(sequences) != len(prompt_lengths) or not sequences:
            raise ConfigError(f"need one prompt length per sequence (> 0 sequences), got "
                              f"{len(prompt_lengths)} for {len(sequences)}")
        max_len = context + 1 if context is not None else None   # the last token is only a target
        self.pad_id, self.train_on_prompt = pad_id, train_on_prompt
        self.seqs: list[np.ndarray] = []
        self.prompt_lengths = np.zeros(len(sequences), dtype=np.int64)
        self.truncated = 0
        for i, (seq, n_prompt) in enumerate(zip(sequences, prompt_lengths)):
            if not 1 <= n_prompt < len(seq):
                raise ConfigError(f"example {i}: needs >= 1 prompt token and >= 1 completion token "
                                  f"(prompt {n_prompt} of {len(seq)} tokens)")
            p, c, cut = fit_pair(seq[:n_prompt], seq[n_prompt:], max_len)
            if cut and overflow == "error":
                raise ConfigError(f"example {i}: {len(seq)} tokens do not fit the model's context of {context} "
                                  f"(+1 target); shorten it or use overflow='truncate'")
            self.truncated += cut
            self.seqs.append(np.asarray(p + c, dtype=np.int64))
            self.prompt_lengths[i] = len(p)
        if self.truncated:
            warnings.warn(f"{self.truncated} of {len(self.seqs)} SFT examples are longer than the model's context "
                          f"({context} tokens + 1 target): prompts cut from the left (completions from the right "
                          "when the prompt would keep less than half the context)", stacklevel=3)

    def __len__(self) -> int:
        return len(self.seqs)

    def lengths(self) -> list[int]:
        """Tokens of each example (for batches of similar lengths: TrainConfig.group_by_length)."""
        return [len(s) for s in self.seqs]

    def n_tokens(self) -> int:
        """Input positions in one epoch (a sequence of n tokens has n - 1 inputs)."""
        return int(sum(len(s) - 1 for s in self.seqs))

    def collate(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """{"input_ids", "attention_mask", "targets"}, each (B, T), T = longest sequence - 1."""
        seqs = [self.seqs[i] for i in indices]
        x, mask = pad_right([s[:-1] for s in seqs], self.pad_id)               # (B, T)
        y, _ = pad_right([s[1:] for s in seqs], IGNORE_INDEX)                  # (B, T): position t predicts t + 1
        first = (torch.ones(len(seqs), dtype=torch.long) if self.train_on_prompt
                 else torch.from_numpy(self.prompt_lengths[list(indices)]))    # (B,) first token trained on
        y[torch.arange(y.shape[1])[None, :] < first[:, None] - 1] = IGNORE_INDEX   # no loss on the prompt
        return {"input_ids": x, "attention_mask": mask, "targets": y}


def completion_loss(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
    """`lm_loss` with the output layer applied only where a target is trained on.

    An emotion example is about 30 prompt tokens and 2 completion tokens (label + EOS): the plain
    loss multiplies every position's hidden state by the (V, C) output matrix and then ignores all
    but two. Here the final hidden states are gathered at the target positions first, so the output
    layer (most of the work for a small model with a large vocabulary) runs on those only. Same
    mean over the same targets as `lm_loss` (tests/finetune/test_sft.py checks values and gradients); a
    model without `hidden_states` / `output_weight` takes `lm_loss` itself.
    """
    if not (hasattr(model, "hidden_states") and hasattr(model, "output_weight")):
        return lm_loss(model, batch)
    targets = batch["targets"]                                                    # (B, T)
    used = targets != IGNORE_INDEX                                                # (B, T)
    h = model.hidden_states(batch["input_ids"], batch.get("attention_mask"))     # (B, T, C)
    logits = linear(h[used], model.output_weight())                              # (N, V)
    return F.cross_entropy(logits.float(), targets[used]), int(used.sum())


# --------------------------------------------------------------------------------------------
# Evaluation by generation
# --------------------------------------------------------------------------------------------

def fit_prompts(prompts: list[list[int]], room: int | None, overflow: str = "truncate") -> list[list[int]]:
    """Cut each prompt to its last `room` tokens (one warning for all), or raise with overflow='error'."""
    if room is None:
        return prompts
    long = sum(len(p) > room for p in prompts)
    if long and overflow == "error":
        raise ConfigError(f"{long} prompts are longer than the {room} tokens the context leaves for them")
    if long:
        warnings.warn(f"{long} of {len(prompts)} prompts are longer than the {room} tokens the model's context "
                      "leaves them: cut from the left", stacklevel=3)
    return [p[-room:] for p in prompts]


def generate_completions(model: torch.nn.Module, tokenizer: Tokenizer, prompts: Sequence[str],
                         max_new_tokens: int, *, eos_id: int, stop_strings: Sequence[str] = (),
                         batch_size: int = 64, overflow: str = "truncate") -> list[str]:
    """Greedy completion of every prompt through the one completion helper (`lm.inference.complete`),
    `batch_size` at a time, longest prompts first (a batch holds similar lengths: less padding); the
    answers come back in the prompts' order. Each answer is the new text up to, not including, the
    first EOS or stop string (the book decodes with skip_special_tokens and its stopping criterion).
    Ids beyond the tokenizer's vocabulary (Qwen2's embedding has unused padding rows) are never generated.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    context = _context_of(model)
    if context is not None and max_new_tokens >= context:
        raise ConfigError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's "
                          f"context of {context}")
    ids = fit_prompts([list(tokenizer.encode(p)) for p in prompts],
                      context - max_new_tokens if context is not None else None, overflow)
    if any(not p for p in ids):
        raise ConfigError("a prompt encodes to no tokens")
    return complete(model, tokenizer, ids, max_new_tokens, stop_token_ids=[eos_id], stop_strings=stop_strings,
                    pad_token_id=eos_id, vocab_limit=getattr(tokenizer, "vocab_size", None), batch_size=batch_size,
                    longest_first=True)
