#!/usr/bin/env python
"""Memory of one GRPO step with Qwen2 in bf16 + AdamW: measured for a tiny model, computed for 0.5B / 1.5B.

A GRPO step (book sections 11-13) holds on the GPU:
- the policy's weights (bf16: 2 bytes per parameter), its gradients (2 B/param, bf16 like the
  weights) and AdamW's two moments (exp_avg, exp_avg_sq: 2 x 2 B/param when they follow the bf16
  parameters, as in the book's code; 2 x 4 B with float32 moments);
- a frozen reference model for the KL term (2 B/param);
- the KV cache of the rollout (layers x 2 x sequences x kv_heads x length x head_dim x 2 B; grouped-
  query attention keeps it small: 2 key/value heads instead of 14);
- the activations autograd keeps for the backward pass of the policy's forward over every
  sequence (prompt + completion), and what the output layer and the log-probabilities of the
  completion tokens keep.

That last part is where the two formulations differ, and both are shown side by side:
- the book's (`token_log_probs_reference`): the logits of every position, then log_softmax over
  the completion's in float32: it keeps the output layer's input for every token and the
  (sequences x completion x vocabulary) float32 log-softmax (19.5 GB for 0.5B at the book's shapes);
- ours (`token_log_probs` -> `chosen_log_probs`, what `grpo_update` runs): the output layer only at
  the completion tokens, in chunks: it keeps the hidden states of those tokens, their target ids
  and mask, and one float32 log-sum-exp per token; the logits exist one chunk at a time.

The activations are the part that depends on how the model is written, so we *measure* them: every
tensor autograd saves during the forward pass is recorded (`torch.autograd.graph.saved_tensors_hooks`;
weights excluded, shared storage counted once), for a tiny Qwen2 in bf16 on the CPU, with the flash-
style attention the GPU runs (q, k, v, output and a log-sum-exp saved; no T x T matrix), once with
each formulation. The same per-token formula (`activation_bytes`) is checked against each
measurement and then evaluated for Qwen2.5-0.5B and 1.5B at the book's batch x length. With
gradient checkpointing (the book's 1.5B run) only each layer's input is kept, plus one layer's
activations while it is recomputed.
The "total" rows count what is kept, as the figures before this change did (78.0 GB for 0.5B).
The "peak" rows add the output layer's largest transient in the backward pass (`head_transient_bytes`):
for the book's formulation the incoming and outgoing gradients of the log-softmax, each as large
as it; for ours one chunk of logits plus float32 copies of the output weight and its gradient.
Still not counted: the decoder layers' transients and the allocator's fragmentation; leave ~20 %.

    python bench/grpo_memory.py
"""
from __future__ import annotations

import argparse

import torch

from lm.models import lean_ops
from lm.models.qwen2 import Qwen2, Qwen2Config
from lm.rl import objective
from lm.rl.objective import token_log_probs, token_log_probs_reference
from lm.utils import saved_tensor_bytes

GB = 1e9
MODELS = {   # Qwen2.5-*-Instruct shapes (config.json on the hub)
    "0.5B": dict(),
    "1.5B": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12),
}
BOOK_RUNS = {  # model -> (sequences per step = prompts x generations, prompt tokens, completion tokens, source)
    "0.5B": (4 * 16, 100, 500, "GRPO.py: 4 prompts x 16 generations, completions up to 500"),
    "1.5B": (7 * 12, 100, 400, "DataParallel notebook: 7 prompts x 12 generations, completions up to 400"),
}


FORMULATIONS = {"book": token_log_probs_reference, "ours": token_log_probs}


def activation_bytes(cfg: Qwen2Config, seqs: int, length: int, completion: int, checkpointing: bool = False,
                     s: int = 2, head: str = "ours") -> dict[str, float]:
    """Bytes autograd keeps for the backward of one forward over `seqs` x `length` tokens (dtype of
    `s` bytes), split into the decoder layers and the head (output layer + log-probabilities of
    the last `completion` tokens, as `head` = "book" or "ours" computes them).

    Per token and layer, what our Qwen2 saves (listed by `measure_saved_bytes` on the tiny model):
    each RMSNorm its float32 input (4C), 1/rms (4) and the rounded normalised x (sC) -- with
    `lm.models.lean_ops` only its input in its own dtype (sC) and 1/rms; the q/k/v projections their
    input (sC); attention q, k, v after RoPE and its output, which is also the output projection's
    input (s(2H + 2KV)D), and a float32 log-sum-exp per head (4H); the MLP its input (sC), gate, up,
    silu(gate) and down's input (4sI) -- with lean_ops gate and up only (2sI). RoPE keeps only its
    shared cos/sin tables; residual additions keep nothing. "book" is the book's head on the plain
    layers (the baseline); "ours" our head on the lean layers.
    The head, per completion token: the book's keeps the output layer's input for every token (sC
    per token of the sequence) and the float32 log-softmax (4V); ours the hidden state (sC), the
    target id (8), the mask (1) and the log-sum-exp (4).
    """
    C, I, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    H, KV, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_size
    if head == "book":            # the plain layers (lean_ops.ENABLED = False), as before
        norm, mlp = 4 * C + 4 + s * C, s * C + 4 * s * I
    else:                         # lm.models.lean_ops: the norm keeps x and 1/rms, the MLP gate and up
        norm, mlp = s * C + 4, s * C + 2 * s * I
    attention = s * C + s * (2 * H + 2 * KV) * D + 4 * H
    per_layer = 2 * norm + attention + mlp                                   # bytes per token
    tokens = seqs * length
    layers = tokens * (L * s * C + per_layer) if checkpointing else tokens * L * per_layer
    final_norm = tokens * norm
    if head == "book":
        head_bytes = tokens * s * C + seqs * completion * cfg.vocab_size * 4
    elif head == "ours":
        head_bytes = seqs * completion * (s * C + 8 + 1 + 4)
    else:
        raise ValueError(f"head must be 'book' or 'ours', got {head!r}")
    return {"layers": layers + final_norm, "head": head_bytes}


def head_transient_bytes(cfg: Qwen2Config, seqs: int, completion: int, s: int = 2, head: str = "ours") -> float:
    """The head's largest transient in the backward pass, beyond what it keeps.

    book: log_softmax's backward holds the incoming gradient and its result, each (seqs x
    completion x V) float32 like the saved log-softmax. ours: one chunk of float32 logits
    (objective.CHUNK_ELEMENTS), the output weight in float32 (a copy unless it is float32) and its
    float32 gradient (V x C each), and the gradient of the completion's hidden states.
    """
    V, C = cfg.vocab_size, cfg.hidden_size
    if head == "book":
        return 2 * seqs * completion * V * 4
    rows = max(1, objective.CHUNK_ELEMENTS // V)
    return rows * V * 4 + (V * C * 4 if s != 4 else 0) + V * C * 4 + seqs * completion * C * s


def measure_saved_bytes(model: torch.nn.Module, seqs: int, length: int, completion: int, head: str = "ours") -> int:
    """Bytes of every tensor autograd saves in the forward + log-probability computation (weights
    excluded), with `grpo_update`'s call: token_log_probs(..., where=completion mask) for "ours",
    the book's full log_softmax (`token_log_probs_reference`) for "book"."""
    ids = torch.randint(0, model.config.vocab_size, (seqs, length))
    mask = torch.ones_like(ids)                                                      # (B, T)

    def forward_backward():
        logp = FORMULATIONS[head](model, ids, mask, completion, 1.0, where=mask[:, -completion:])  # (B, k)
        logp.sum().backward()
    lean_ops.ENABLED = head != "book"                         # the baseline: the plain layers too
    try:
        return saved_tensor_bytes(model, forward_backward)[0]
    finally:
        lean_ops.ENABLED = True


def gpu_table(name: str, checkpointing: bool) -> dict[str, float]:
    """Print one model's table, the book's formulation beside ours; returns the totals."""
    cfg = Qwen2Config(**MODELS[name])
    with torch.device("meta"):
        n = Qwen2(cfg).num_parameters()
    seqs, prompt, completion, source = BOOK_RUNS[name]
    length = prompt + completion
    kv = cfg.num_hidden_layers * 2 * seqs * cfg.num_key_value_heads * length * cfg.head_size * 2
    fixed = [("policy weights (bf16)", 2 * n), ("gradients (bf16)", 2 * n), ("AdamW moments (bf16)", 4 * n),
             ("reference model (bf16)", 2 * n), ("rollout KV cache", kv)]
    act = {h: activation_bytes(cfg, seqs, length, completion, checkpointing, head=h) for h in FORMULATIONS}
    rows = fixed + [(f"activations, decoder layers{' (checkpointed)' if checkpointing else ''}",
                     {h: act[h]["layers"] for h in act}),
                    ("output layer + log-probs of the completion (kept)", {h: act[h]["head"] for h in act})]
    total = {h: sum(b[h] if isinstance(b, dict) else b for _, b in rows) for h in act}
    peak = {h: total[h] + head_transient_bytes(cfg, seqs, completion, head=h) for h in act}
    micro = 8                                       # gradient accumulation over micro-batches of 8 sequences
    small = {h: activation_bytes(cfg, micro, length, completion, checkpointing, head=h) for h in act}
    batched = {h: sum(b for _, b in fixed) + small[h]["layers"] + small[h]["head"] for h in act}
    print(f"\nQwen2.5-{name}-Instruct: {n / 1e6:.0f} M parameters; {source}\n"
          f"  = {seqs} sequences x ({prompt} prompt + {completion} completion) tokens, one update on all of them\n"
          f"  {'':52s} {'book':>9s} {'ours':>9s}  ours/book")

    def line(label: str, b, note: str = "") -> None:
        book, ours = (b["book"], b["ours"]) if isinstance(b, dict) else (b, b)
        ratio = f"{ours / book:9.3f}" if isinstance(b, dict) else ""
        print(f"  {label:52s} {book / GB:6.2f} GB {ours / GB:6.2f} GB {ratio}{note}")

    for label, b in rows:
        line(label, b)
    line("total", total, f"   (float32 AdamW moments: +{4 * n / GB:.2f} GB)")
    line("peak: total + the output layer's backward transient", peak)
    line(f"total with micro-batches of {micro} sequences", batched)
    return {"book": total["book"], "ours": total["ours"], "peak_book": peak["book"], "peak_ours": peak["ours"]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Memory of a GRPO step: measured on a tiny Qwen2, computed for 0.5B/1.5B.")
    p.add_argument("--seqs", type=int, default=8, help="sequences in the measured batch (tiny model)")
    p.add_argument("--length", type=int, default=64, help="tokens per sequence in the measured batch")
    p.add_argument("--completion", type=int, default=48, help="completion tokens (log-probabilities taken on these)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    tiny = Qwen2(Qwen2Config(vocab_size=768, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2)).to(torch.bfloat16).train()
    n = tiny.num_parameters()
    print(f"tiny Qwen2 (the fixtures' shapes, {n:,} parameters), bf16, {args.seqs} x {args.length} tokens, "
          f"log-probs of the last {args.completion}; weights + grads + AdamW (bf16) {8 * n / 1e6:.2f} MB; "
          f"activations saved for backward:")
    for head in FORMULATIONS:
        measured = measure_saved_bytes(tiny, args.seqs, args.length, args.completion, head)
        formula = sum(activation_bytes(tiny.config, args.seqs, args.length, args.completion, head=head).values())
        print(f"  {head:4s} measured {measured / 1e6:.2f} MB, formula {formula / 1e6:.2f} MB ({formula / measured:.3f}x)")
    for name in MODELS:
        totals = gpu_table(name, checkpointing=False)
        gpu_table(name, checkpointing=True)
        if name == "0.5B":
            print(f"\n  0.5B without micro-batching: total {totals['book'] / GB:.1f} GB -> {totals['ours'] / GB:.1f} GB "
                  f"({totals['ours'] / totals['book']:.3f}x; target <= 0.5x); with the head's backward transient "
                  f"{totals['peak_book'] / GB:.1f} GB -> {totals['peak_ours'] / GB:.1f} GB "
                  f"({totals['peak_ours'] / totals['peak_book']:.3f}x)")


if __name__ == "__main__":
    main()
