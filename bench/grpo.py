#!/usr/bin/env python
"""Benchmark: GRPO rollouts batched vs one sequence at a time, GRPO steps on 1 vs 2 ranks, and ours vs TRL.

1. Rollouts: B x G completions sampled through the one generation path as one batch (what
   `lm.rl.grpo.rollout` does) against the same number of completions generated one sequence at
   a time (what a loop over `model.generate` per completion would do). Same model, same prompts,
   the same number of new tokens (no early stop), best of `--repeat`. Target: >= 5x at B x G = 32.
2. Data parallel: `train_grpo` steps at a fixed global batch on 1 process vs 2 processes
   (`lm.rl.distributed.spawn`, gloo on the CPU), each process with `--threads` threads; step time
   and completion tokens/s over all ranks, from the runs' own metrics.jsonl.

3. `--vs-trl` (only this part): TRL's `GRPOTrainer` and ours, one after the other in one process,
   on the same random GPT-2 (GPT-2's vocabulary of 50,257, 2 layers, width 128, the same weights:
   ours is saved and loaded into transformers' GPT2LMHeadModel), the same prompts and tokenizer
   (a byte-level stand-in with GPT-2's vocabulary size: the same ids on both sides), 4 prompts x 8
   completions, 64 new tokens, temperature 1.0, beta 0.04, epsilon 0.1, one update per rollout
   (TRL: num_iterations=1, loss_type="grpo"), the same learning rate, weight decay, gradient
   clipping, no dropout, no gradient checkpointing, float32, the same number of torch threads.
   `--trl-steps` steps each, the first left out as warm-up, `--rounds` times in alternation;
   prints the median seconds per step of both and ours / TRL. Target: <= 1/3. Ours is also
   split into rollout and update. Random weights rarely sample the end-of-text token, so nearly
   every completion runs to 64 tokens on both sides (the script prints the mean lengths).
   TRL is not a dependency: install it in a separate virtual environment and run this script
   with that environment's python (torch==2.13.0 takes the machine's CPU build):

       python3 -m venv /tmp/trl-venv && /tmp/trl-venv/bin/pip install torch==2.13.0 trl
       PYTHONPATH=$PWD nice -n 19 /tmp/trl-venv/bin/python bench/grpo.py --vs-trl

   Measured that way with trl 1.16.0, transformers 5.25.0 (see README.md, Benchmarks).

The model of parts 1 and 2 is a small GPT-2 of the shape the grpo stage uses (random weights:
speed does not care).

    python bench/grpo.py                      # parts 1 and 2
    python bench/grpo.py --skip-ranks         # rollouts only
    python bench/grpo.py --vs-trl             # ours vs TRL (needs trl, see above)
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

import lm.rl.grpo as grpo_module
from lm.inference.generate import generate
from lm.inference.sampling import SamplingConfig
from lm.models.gpt2 import GPT2, GPT2Config
from lm.rl import distributed
from lm.rl.grpo import GRPOConfig, train_grpo
from lm.rl.tasks import REWARDS, Problem, build_prompt

VOCAB = 2000


class DigitTok:
    """A stand-in tokenizer (characters -> ids) so the benchmark needs no trained tokenizer."""
    vocab_size, eot_id = VOCAB, VOCAB - 1

    def encode(self, text: str) -> list[int]:
        return [ord(c) % (VOCAB - 1) for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(32 + i % 90) for i in ids)


def small_gpt2(seed: int = 0) -> GPT2:
    torch.manual_seed(seed)
    return GPT2(GPT2Config(vocab_size=VOCAB, n_positions=512, n_embd=128, n_layer=2, n_head=4,
                           embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)).eval()


def problems(n: int = 64) -> list[Problem]:
    return [Problem(f"Hale dipped {a} lamps and then {a + 7} more. How many lamps?", str(2 * a + 7), "")
            for a in range(n)]


def time_rollouts(model: GPT2, rows: int, prompt_len: int, new_tokens: int, repeat: int) -> tuple[float, float]:
    """(seconds batched, seconds one by one) to sample `rows` completions of `new_tokens` tokens."""
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, VOCAB - 1, (prompt_len,), generator=g).tolist() for _ in range(rows)]
    cfg = SamplingConfig(temperature=1.0)
    best_batched = best_single = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        generate(model, prompts, new_tokens, sampling=cfg, generator=g)
        best_batched = min(best_batched, time.perf_counter() - t)
        t = time.perf_counter()
        for p in prompts:
            generate(model, [p], new_tokens, sampling=cfg, generator=g)
        best_single = min(best_single, time.perf_counter() - t)
    return best_batched, best_single


def ranks_worker(rank: int, world: int, cfg_dict: dict, threads: int, out: str) -> None:
    torch.set_num_threads(threads)
    d = distributed.init(rank, world, "cpu")
    model = small_gpt2()
    train_grpo(model, DigitTok(), problems(), GRPOConfig(**cfg_dict), out, DigitTok.eot_id, d)
    distributed.shutdown(d)


def step_stats(folder: Path) -> tuple[float, float]:
    """Median step seconds and mean tokens/s of a run's metrics.jsonl (the first step is warm-up)."""
    recs = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()][1:]
    secs = sorted(r["seconds"] for r in recs)
    return secs[len(secs) // 2], sum(r["tokens_per_s"] for r in recs) / len(recs)


# --------------------------------------------------------------------------------------------
# Ours vs TRL's GRPOTrainer (--vs-trl)
# --------------------------------------------------------------------------------------------

GPT2_VOCAB = 50_257
TRL_INSTALL = ("python3 -m venv /tmp/trl-venv && /tmp/trl-venv/bin/pip install torch==2.13.0 trl\n"
               "PYTHONPATH=$PWD /tmp/trl-venv/bin/python bench/grpo.py --vs-trl")


def byte_table() -> list[bytes]:
    """The stand-in tokenizer's bytes for each of GPT-2's 50,257 ids: 0-255 one byte each (all that
    `encode` produces), then two-byte strings (decodable, like GPT-2's merged tokens), then end-of-text."""
    pairs = [bytes([a, b]) for a in range(256) for b in range(256)]
    return [bytes([b]) for b in range(256)] + pairs[:GPT2_VOCAB - 257] + [b""]


class ByteTok:
    """Ours: UTF-8 bytes -> ids 0-255, with GPT-2's vocabulary size and end-of-text id (50,256)."""
    vocab_size, eot_id = GPT2_VOCAB, GPT2_VOCAB - 1

    def __init__(self) -> None:
        self.table = byte_table()

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return b"".join(self.table[i] for i in ids).decode("utf-8", errors="replace")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map (the alphabet of byte-level BPE vocabularies)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    extra = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + i) for i, b in enumerate(extra)}}


def trl_tokenizer():
    """The same tokenizer for transformers: byte-level BPE with the same 50,257 ids and no merges,
    so it encodes every text to the ids `ByteTok` gives and decodes every id to the same bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    chars = bytes_to_unicode()
    vocab = {"".join(chars[b] for b in t): i for i, t in enumerate(byte_table()[:-1])}
    vocab["<|endoftext|>"] = GPT2_VOCAB - 1
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def gpt2_vocab_model(seed: int = 0) -> GPT2:
    """A random GPT-2 with GPT-2's vocabulary and positions, 2 layers of width 128 (the issue's shapes)."""
    torch.manual_seed(seed)
    return GPT2(GPT2Config(vocab_size=GPT2_VOCAB, n_positions=1024, n_embd=128, n_layer=2, n_head=4,
                           embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)).eval()


@contextmanager
def timing(module, names: list[str], into: dict[str, list[float]]):
    """Time every call of module.<name> (for name in names) into `into[name]`, then put them back."""
    saved = {n: getattr(module, n) for n in names}

    def timed(name, fn):
        def call(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                into.setdefault(name, []).append(time.perf_counter() - t)
        return call

    for n in names:
        setattr(module, n, timed(n, saved[n]))
    try:
        yield into
    finally:
        for n, fn in saved.items():
            setattr(module, n, fn)


def run_ours(model: GPT2, problems: list[Problem], a, out: Path) -> dict:
    """`train_grpo` for a.trl_steps steps; its per-step seconds, and the rollout's and the update's."""
    cfg = GRPOConfig(prompts_per_step=a.prompts, group_size=a.group, max_new_tokens=a.new_tokens, temperature=1.0,
                     top_p=1.0, beta=0.04, epsilon=0.1, mu=1, steps=a.trl_steps, lr=a.lr, weight_decay=0.01,
                     clip_norm=0.1)
    parts: dict[str, list[float]] = {}
    with timing(grpo_module, ["rollout", "grpo_update"], parts):
        train_grpo(model, ByteTok(), problems, cfg, out, ByteTok.eot_id, desc="ours")
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"step": [r["seconds"] for r in recs], "rollout": parts["rollout"], "update": parts["grpo_update"],
            "length": [r["completion_length"] for r in recs]}


def run_trl(folder: Path, problems: list[Problem], a, out: Path) -> dict:
    """TRL's GRPOTrainer with our settings on the model saved in `folder`; per-step seconds."""
    from datasets import Dataset
    from transformers import GPT2LMHeadModel, PrinterCallback, TrainerCallback
    from trl import GRPOConfig as TRLConfig, GRPOTrainer

    def reward(name, fn):                    # TRL calls reward(prompts=, completions=, answer=<column>, ...)
        def score(completions, answer, **_):
            return [fn(c, g) for c, g in zip(completions, answer)]
        score.__name__ = name
        return score

    ends: list[float] = []
    threads: set[int] = set()

    class Clock(TrainerCallback):            # a step = from the end of the previous one (data, generation, update)
        def on_train_begin(self, args, state, control, **_):
            ends.append(time.perf_counter())

        def on_step_end(self, args, state, control, **_):
            ends.append(time.perf_counter())
            threads.add(torch.get_num_threads())  # the trainer could change it: the same as ours?

    no_checkpointing = {("activation_checkpointing" if "activation_checkpointing" in TRLConfig.__dataclass_fields__
                         else "gradient_checkpointing"): False}         # renamed in transformers 5
    args = TRLConfig(output_dir=str(out), per_device_train_batch_size=a.prompts * a.group, num_generations=a.group,
                     gradient_accumulation_steps=1, max_completion_length=a.new_tokens, temperature=1.0, top_p=1.0,
                     top_k=0, beta=0.04, epsilon=0.1, num_iterations=1, loss_type="grpo", scale_rewards="group",
                     learning_rate=a.lr, weight_decay=0.01, max_grad_norm=0.1, lr_scheduler_type="constant",
                     warmup_steps=0, max_steps=a.trl_steps, logging_steps=1, disable_tqdm=True, report_to="none",
                     save_strategy="no", use_cpu=True, bf16=False, fp16=False, disable_dropout=True,
                     dataloader_num_workers=0, seed=0, **no_checkpointing)
    data = Dataset.from_list([{"prompt": build_prompt(p.question), "answer": p.answer} for p in problems])
    trainer = GRPOTrainer(model=GPT2LMHeadModel.from_pretrained(folder), args=args, train_dataset=data,
                          reward_funcs=[reward(n, f) for n, f in REWARDS.items()], processing_class=trl_tokenizer(),
                          callbacks=[Clock()])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    lengths = [r["completions/mean_length"] for r in trainer.state.log_history if "completions/mean_length" in r]
    return {"step": [b - t for t, b in zip(ends, ends[1:])], "length": lengths, "threads": sorted(threads)}


def vs_trl(a) -> None:
    """Ours and TRL's GRPOTrainer, same model, prompts, tokenizer and settings; --rounds times each."""
    here = Path(__file__).resolve().parent       # bench/tokenizers.py would shadow the `tokenizers` package
    sys.path[:] = [q for q in sys.path if Path(q or ".").resolve() != here]
    try:
        import trl
        import transformers
    except ImportError:
        print("--vs-trl needs trl (not a dependency of this project). Install it in a separate environment and run "
              "this script with that environment's python:\n" + TRL_INSTALL)
        return
    torch.set_num_threads(a.threads)
    text = build_prompt(problems()[0].question)
    if trl_tokenizer().encode(text, add_special_tokens=False) != ByteTok().encode(text):
        raise RuntimeError("the two stand-in tokenizers disagree: the comparison would not be on the same prompts")
    start = gpt2_vocab_model()
    ours: dict[str, list[float]] = {}
    theirs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        start.save_pretrained(folder)
        for r in range(a.rounds):
            for name, result in (("ours", ours), ("trl", theirs)):
                out = Path(tmp) / f"{name}{r}"
                got = (run_ours(copy.deepcopy(start), problems(), a, out) if name == "ours"
                       else run_trl(folder, problems(), a, out))
                for key, values in got.items():
                    result.setdefault(key, []).extend(values[1:] if key in ("step", "rollout", "update") else values)
    med = statistics.median
    print(f"GRPO step, ours vs TRL {trl.__version__} (transformers {transformers.__version__}), random GPT-2 "
          f"(vocab {GPT2_VOCAB}, 2 layers, width 128), {a.prompts} prompts x {a.group} completions, "
          f"{a.new_tokens} new tokens, {a.threads} torch thread(s), {a.rounds} round(s) of {a.trl_steps} steps "
          f"(first of each left out); load average {os.getloadavg()[0]:.1f} at the end:")
    print(f"  ours  {med(ours['step']):7.3f} s/step (median; {min(ours['step']):.3f}-{max(ours['step']):.3f}): "
          f"rollout {med(ours['rollout']):.3f} s, update {med(ours['update']):.3f} s; "
          f"mean completion {statistics.mean(ours['length']):.1f} tokens")
    print(f"  TRL   {med(theirs['step']):7.3f} s/step (median; {min(theirs['step']):.3f}-{max(theirs['step']):.3f}); "
          f"mean completion {statistics.mean(theirs['length']):.1f} tokens; torch threads {sorted(set(theirs['threads']))}")
    print(f"  ours / TRL  {med(ours['step']) / med(theirs['step']):.3f}   (target <= 0.333)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="GRPO rollouts batched vs one at a time; 1 vs 2 ranks.")
    p.add_argument("--prompts", type=int, default=4, help="B: prompts per step")
    p.add_argument("--group", type=int, default=8, help="G: completions per prompt (B x G rows)")
    p.add_argument("--prompt-len", type=int, default=48, help="prompt tokens")
    p.add_argument("--new-tokens", type=int, default=None, help="completion tokens (default 48; 64 with --vs-trl)")
    p.add_argument("--repeat", type=int, default=2, help="timings per measurement (best kept)")
    p.add_argument("--steps", type=int, default=6, help="GRPO steps per rank-count run")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process in the ranks part and --vs-trl")
    p.add_argument("--skip-ranks", action="store_true", help="only the rollout part")
    p.add_argument("--vs-trl", action="store_true", help="only ours vs TRL's GRPOTrainer (needs trl; see the docstring)")
    p.add_argument("--trl-steps", type=int, default=5, help="--vs-trl: steps per run (the first is left out)")
    p.add_argument("--rounds", type=int, default=2, help="--vs-trl: runs of each, in alternation")
    p.add_argument("--lr", type=float, default=5e-6, help="--vs-trl: learning rate of both")
    a = p.parse_args(argv)
    if a.vs_trl:
        a.new_tokens = a.new_tokens or 64
        vs_trl(a)
        return
    a.new_tokens = a.new_tokens or 48

    rows = a.prompts * a.group
    model = small_gpt2()
    batched, single = time_rollouts(model, rows, a.prompt_len, a.new_tokens, a.repeat)
    tokens = rows * a.new_tokens
    print(f"rollouts, {rows} rows x {a.new_tokens} new tokens (prompt {a.prompt_len}), {torch.get_num_threads()} threads:")
    print(f"  batched       {batched:7.3f} s  {tokens / batched:9.0f} tokens/s")
    print(f"  one at a time {single:7.3f} s  {tokens / single:9.0f} tokens/s")
    print(f"  speed-up      {single / batched:7.1f}x   (target >= 5x)")
    if a.skip_ranks:
        return
    cfg = dict(prompts_per_step=a.prompts, group_size=a.group, max_new_tokens=a.new_tokens, steps=a.steps, lr=1e-5)
    print(f"GRPO steps, global batch {a.prompts} prompts x {a.group}, {a.threads} thread(s) per rank:")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for world in (1, 2):
            out = Path(tmp) / f"w{world}"
            t = time.perf_counter()
            distributed.spawn(ranks_worker, world, cfg, a.threads, str(out))
            wall = time.perf_counter() - t
            results[world] = step_stats(out)
            print(f"  {world} rank(s): step {results[world][0]:.3f} s (median), {results[world][1]:.0f} tokens/s, "
                  f"{wall:.1f} s wall incl. start-up")
    print(f"  2 ranks / 1 rank step time: {results[2][0] / results[1][0]:.2f}x")


if __name__ == "__main__":
    main()
