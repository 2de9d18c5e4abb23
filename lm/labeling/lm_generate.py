"""A local language model as a labeller, by generation: the book's procedure with our own model.

The book sends its prompt (`lm.labeling.prompt.build_prompt`) to a hosted model, takes the last
ID in the reply, accepts it only if it is one of the document's candidates, and tries up to 3
times. Here the model is ours and the reply comes from the one completion helper
(`lm.inference.complete`, over the one generation path):

    attempt 1   greedy decoding
    attempt 2-3 sampling (temperature 0.7, top-p 0.95 by default), for documents still without
                a valid answer

Documents are batched: every document of a batch gets its first attempt in one `generate` call,
those without a valid ID get the second attempt together, and so on. Each reply stops at a
newline or the end-of-text token, or after `max_new_tokens`.

The book's prompt is about 250 words of instructions around the document and the candidates (760
tokens of our small BPE with three candidates). When it does not fit a model's window (the small
GPT-2 of chapter 5 has 256 positions), the generator sends `compact_prompt`: the book's prompt
without its constant instructions, that is the document, the candidate list and the book's
request for the ID (a model tuned on this layout, `lm.labeling.instruct`, learns the constant
text as a constant anyway). If that still overflows, the abstract loses its end (its beginning
names the topic); whatever overflows after that is cut from the left, so the reply always
follows the candidates and the request. `template="short"` drops even the request (document,
candidates, then "Answer: ID:").

An instruction-tuned model (Qwen2-Instruct, loaded with `lm.models.auto.load_causal_lm`) gets the
prompt as the one user message of a ChatML conversation (`chat=True`, the book sends one user
message), and stops at `<|im_end|>`. The document's text is encoded as plain text, so a
special-token string inside an abstract cannot forge a turn.
"""
from __future__ import annotations

from typing import Sequence

import torch

from lm.data.loaders import Abstract
from lm.errors import ConfigError
from lm.inference.complete import complete
from lm.inference.sampling import SamplingConfig
from lm.tokenizers.chat import DEFAULT_SYSTEM, IM_END, apply_chat_template
from lm.labeling.labeller import Labeller
from lm.labeling.prompt import build_prompt, category_line, parse_answer
from lm.labeling.taxonomy import Taxonomy

TEMPLATES = ("book", "short")


def short_prompt(doc: Abstract, candidates: Sequence[str], taxonomy: Taxonomy) -> str:
    """Document, candidate lines, and a cue to copy one ID."""
    lines = "\n".join(category_line(taxonomy.leaf(q)) for q in candidates)
    return f"Title: {doc.title}\nAbstract: {doc.abstract}\n\nCategories:\n{lines}\n\nAnswer: ID:"


def compact_parts(doc: Abstract, candidates: Sequence[str], taxonomy: Taxonomy) -> tuple[str, str, str]:
    """The book's prompt without the instructions every prompt shares, in three parts: before the
    abstract, the abstract, after it (the candidates and the request)."""
    lines = "\n".join(category_line(taxonomy.leaf(q)) for q in candidates)
    return (f"Here is the document to classify:\n\nTitle: {doc.title}\n\nAbstract:", f" {doc.abstract}",
            f"\n\nHere are the possible categories:\n\n{lines}\n\nProvide only the ID of the selected category.\nID:")


def compact_prompt(doc: Abstract, candidates: Sequence[str], taxonomy: Taxonomy) -> str:
    return "".join(compact_parts(doc, candidates, taxonomy))


class LMGenerator(Labeller):
    """Ask a local LM for the ID, the book's way: last match, validated, up to `attempts` tries."""

    def __init__(self, model: torch.nn.Module, tokenizer, taxonomy: Taxonomy, name: str = "lm_generate",
                 template: str = "book", attempts: int = 3, max_new_tokens: int = 24, batch_size: int = 64,
                 sampling: SamplingConfig | None = None, seed: int = 0, chat: bool = False,
                 system: str | None = DEFAULT_SYSTEM):
        if template not in TEMPLATES:
            raise ConfigError(f"template must be one of {TEMPLATES}, got {template!r}")
        if attempts < 1:
            raise ConfigError(f"attempts must be >= 1, got {attempts}")
        self.model, self.tokenizer, self.taxonomy = model, tokenizer, taxonomy
        self.name, self.template, self.attempts = name, template, attempts
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.sampling = sampling or SamplingConfig(temperature=0.7, top_p=0.95)   # for the retries
        self.generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
        self.window = getattr(model.config, "n_positions", None)    # None: no length limit
        if self.window is not None and self.window <= max_new_tokens:
            raise ConfigError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in a window of {self.window}")
        specials = getattr(tokenizer, "special_tokens", {})
        if chat and IM_END not in specials:
            raise ConfigError(f"{name}: chat=True needs a ChatML tokenizer (with {IM_END}), e.g. Qwen2-Instruct's")
        self.chat, self.system = chat, system            # ChatML user message; its default system message
        eot = getattr(tokenizer, "eot_id", None)
        self.stop_ids = [t for t in (eot, specials.get(IM_END) if chat else None) if t is not None]
        self.attempts_used: list[int] = []                            # attempts per answered document

    def prompt_ids(self, doc: Abstract, candidates: Sequence[str]) -> list[int]:
        text = (build_prompt if self.template == "book" else short_prompt)(doc, candidates, self.taxonomy)
        ids = self.tokenizer.encode_ordinary(text)
        room = None if self.window is None else self.window - self.max_new_tokens
        if self.template == "book" and room is not None and len(ids) > room:     # see the module docstring
            head, abstract, tail = (self.tokenizer.encode_ordinary(t)
                                    for t in compact_parts(doc, candidates, self.taxonomy))
            ids = head + abstract[:max(0, room - len(head) - len(tail))] + tail    # the abstract's end goes first
        if self.chat:   # the template's specials as specials, the prompt as plain text
            before, after = apply_chat_template([{"role": "user", "content": "\x00"}], True, self.system).split("\x00")
            ids = (self.tokenizer.encode(before, allowed_special="all") + ids +
                   self.tokenizer.encode(after, allowed_special="all"))
        if self.window is not None:
            ids = ids[-(self.window - self.max_new_tokens):]          # keep the end (see the docstring)
        return ids

    def replies(self, prompts: list[list[int]], attempt: int) -> list[str]:
        """One generated reply per prompt: greedy on attempt 0, sampled afterwards. A reply ends before
        its stop token; the newline that stopped it stays in it (`cut="tokens"`)."""
        return complete(self.model, self.tokenizer, prompts, self.max_new_tokens, cut="tokens",
                        sampling=None if attempt == 0 else self.sampling, stop_token_ids=self.stop_ids,
                        stop_strings=["\n"], pad_token_id=self.stop_ids[0] if self.stop_ids else None,
                        generator=self.generator, vocab_limit=self.tokenizer.vocab_size)

    def label(self, document: Abstract, candidates: Sequence[str]) -> str | None:
        return next(self.label_many([document], [candidates]))[1]

    def label_many(self, documents, candidates):
        pattern = self.taxonomy.id_pattern
        for start in range(0, len(documents), self.batch_size):
            idx = [i for i in range(start, min(start + self.batch_size, len(documents))) if candidates[i]]
            answers: dict[int, str | None] = {i: None for i in range(start, min(start + self.batch_size, len(documents)))}
            prompts = {i: self.prompt_ids(documents[i], candidates[i]) for i in idx}
            for attempt in range(self.attempts):
                todo = [i for i in idx if answers[i] is None]
                if not todo:
                    break
                for i, text in zip(todo, self.replies([prompts[i] for i in todo], attempt)):
                    answers[i] = parse_answer(text, pattern, candidates[i])
                    if answers[i] is not None:
                        self.attempts_used.append(attempt + 1)
            yield from answers.items()
