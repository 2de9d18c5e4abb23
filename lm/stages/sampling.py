"""Stage sampling (book, 5.4): the book's six sampling demos and its input-check errors.

The book samples five tokens per setting from an eight-word vocabulary with fixed logits. Five
draws show little, so each demo here draws many (2,000 with --quick, 20,000 with --full) and
reports the exact distribution `sample_token` draws from, the empirical frequencies, the entropy
and the total-variation distance between the two, beside the first five draws as in the book.
Two extra demos show the penalties and `min_tokens_to_keep`; the batched torch processors are
checked against the NumPy reference on every demo.

Each setting also continues one of the book's prompts with the chapter 5 GPT-2 (a --model GPT-2
folder, or the small GPT-2 of this run, see `lm.stages.gpt2_pretrain.pretrained_gpt2`), through the
one generation path.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lm.errors import SamplingError
from lm.inference.generate import generate_text
from lm.inference.sampling import (SamplingConfig, process_logits, sample_token, token_counts, token_probabilities)
from lm.models.gpt2 import GPT2
from lm.stages import RunConfig, quick_full
from lm.stages.gpt2_pretrain import pretrained_gpt2
from lm.tokenizers.gpt2 import GPT2Tokenizer
from lm.utils import atomic_write_json, say

KEY_METRICS = ["demos", "errors_caught", "max_tv_distance", "torch_vs_reference"]
DATA_FILES: list[str] = []   # the demos need no data; the model samples need the small GPT-2 (NEEDS_GPT2)
NEEDS_GPT2 = True

VOCABULARY = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog"]
LOGITS = np.array([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -1.5])
PREV = ["the", "the", "quick"]          # history for the penalty demo

# (name, what the book's demo shows, sampling parameters of sample_token)
DEMOS = [
    ("default", "temperature=0.7, no top-k/p filtering", dict(temperature=0.7)),
    ("high_temperature", "temperature=2.0: more random", dict(temperature=2.0)),
    ("low_temperature", "temperature=0.2: more deterministic", dict(temperature=0.2)),
    ("top_k", "top_k=3", dict(temperature=0.7, top_k=3)),
    ("top_p", "top_p=0.9", dict(temperature=0.7, top_p=0.9)),
    ("combined", "temperature=0.5, top_k=3, top_p=0.9", dict(temperature=0.5, top_k=3, top_p=0.9)),
    # two more, for the parts of 5.4 the six do not exercise
    ("penalties", f"repetition 1.3, presence 0.5, frequency 0.3 after {PREV}",
     dict(temperature=0.7, repetition_penalty=1.3, presence_penalty=0.5, frequency_penalty=0.3)),
    ("min_tokens_to_keep", "top_p=0.1 would keep one token; min_tokens_to_keep=3 keeps three",
     dict(temperature=0.7, top_p=0.1, min_tokens_to_keep=3)),
]

# The book's error examples (first two) and the other input checks.
ERRORS = [
    ("mismatched sizes", dict(logits=LOGITS[:5])),
    ("temperature=0", dict(temperature=0)),
    ("top_k=9 > vocabulary", dict(top_k=9)),
    ("top_p=1.5", dict(top_p=1.5)),
    ("all logits -inf", dict(logits=np.full(8, -np.inf))),
]


def run_demo(params: dict, n: int, rng: np.random.Generator) -> dict:
    prev = PREV if "repetition_penalty" in params else None
    cfg = SamplingConfig(**params)
    ids = [VOCABULARY.index(t) for t in prev] if prev else None
    p = token_probabilities(LOGITS, cfg, ids)
    draws = [sample_token(LOGITS, VOCABULARY, prev_tokens=prev, rng=rng, **params) for _ in range(n)]
    freq = np.array([draws.count(w) for w in VOCABULARY]) / n
    # the batched torch processors on the same input
    counts = token_counts(torch.tensor([ids]), len(LOGITS)) if ids else None
    tp = process_logits(torch.tensor(LOGITS)[None], cfg, counts).softmax(-1)[0].numpy()
    nz = p[p > 0]
    return {
        "first_five": draws[:5],
        "probabilities": {w: round(float(x), 4) for w, x in zip(VOCABULARY, p)},
        "frequencies": {w: round(float(x), 4) for w, x in zip(VOCABULARY, freq)},
        "entropy_bits": round(float(-(nz * np.log2(nz)).sum()), 4),
        "candidates": int((p > 0).sum()),
        "tv_distance": round(float(0.5 * np.abs(freq - p).sum()), 4),
        "torch_max_abs_diff": float(np.abs(tp - p).max()),
    }


@dataclass
class Settings:
    draws: int = quick_full(2_000, 20_000)      # draws per demo (the book draws 5)
    model_prompt: str = quick_full("The President", "The President")   # prompt for the GPT-2 samples
    model_tokens: int = quick_full(20, 20)      # new tokens per GPT-2 sample


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:
    n = s.draws
    rng = np.random.default_rng(cfg.seed)
    say(f"vocabulary: {VOCABULARY}\nlogits: {LOGITS.tolist()}\n{n} draws per demo")

    demos = {}
    for name, desc, params in DEMOS:
        res = run_demo(params, n, rng)
        demos[name] = {"setting": desc, **res}
        say(f"{name:18s} {desc}\n    first five: {res['first_five']}  candidates={res['candidates']} "
            f"entropy={res['entropy_bits']:.3f} bits  TV(empirical, exact)={res['tv_distance']:.4f}")

    errors = {}
    for label, kw in ERRORS:
        kw = dict(kw)
        logits = kw.pop("logits", LOGITS)
        try:
            sample_token(logits, VOCABULARY, rng=rng, **kw)
            errors[label] = "NOT RAISED"
        except SamplingError as e:
            errors[label] = f"{type(e).__name__}: {e}"
        say(f"expected error ({label}): {errors[label]}")
    accepted = [label for label, v in errors.items() if v == "NOT RAISED"]
    if accepted:   # the book's input checks are part of this stage's job: a silent pass is a failure
        raise RuntimeError(f"sample_token accepted invalid input: {', '.join(accepted)}")

    folder = pretrained_gpt2(cfg, data_dir)
    model, tok = GPT2.from_pretrained(folder), GPT2Tokenizer.from_dir(folder)
    prompt, model_samples = s.model_prompt, {}
    say(f"model samples from {folder}, prompt {prompt!r}:")
    for i, (name, _, params) in enumerate(DEMOS[:6]):
        g = torch.Generator().manual_seed(cfg.seed + i)
        text = generate_text(model, tok, [prompt], s.model_tokens, sampling=SamplingConfig(**params), generator=g,
                             stop_token_ids=[tok.eot_id] if tok.eot_id is not None else [])[0]
        model_samples[name] = prompt + text
        say(f"  {name:18s} {prompt + text!r}")

    metrics = {
        "demos": len(demos),
        "draws_per_demo": n,
        "errors_caught": sum(not v.startswith("NOT") for v in errors.values()),
        "max_tv_distance": max(d["tv_distance"] for d in demos.values()),
        "torch_vs_reference": max(d["torch_max_abs_diff"] for d in demos.values()),
        "entropy_bits": {k: d["entropy_bits"] for k, d in demos.items()},
        "first_five": {k: d["first_five"] for k, d in demos.items()},
        "errors": errors,
    }
    metrics["model_samples"] = model_samples
    metrics["model_dir"] = str(folder)
    atomic_write_json(out_dir / "demos.json", {"demos": demos, "errors": errors, "model_samples": model_samples})
    return metrics
