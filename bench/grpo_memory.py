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
  sequence (prompt + completion), and the logits with their log-softmax over the completion.

The activations are the part that depends on how the model is written, so we *measure* them: every
tensor autograd saves during the forward pass is recorded (`torch.autograd.graph.saved_tensors_hooks`;
weights excluded, shared storage counted once), for a tiny Qwen2 in bf16 on the CPU, with the flash-
style attention the GPU runs (q, k, v, output and a log-sum-exp saved; no T x T matrix). The same
per-token formula (`activation_bytes`) is checked against that measurement and then evaluated for
Qwen2.5-0.5B and 1.5B at the book's batch x length. With gradient checkpointing (the book's 1.5B run)
only each layer's input is kept, plus one layer's activations while it is recomputed.
Not counted: transient buffers of the backward pass (e.g. the gradient of the logits, about the
size of the log-softmax, while it is being used) and the allocator's fragmentation; leave ~20 %.

    python bench/grpo_memory.py
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from lm.models.qwen2 import Qwen2, Qwen2Config

GB = 1e9
MODELS = {   # Qwen2.5-*-Instruct shapes (config.json on the hub)
    "0.5B": dict(),
    "1.5B": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12),
}
BOOK_RUNS = {  # model -> (sequences per step = prompts x generations, prompt tokens, completion tokens, source)
    "0.5B": (4 * 16, 100, 500, "GRPO.py: 4 prompts x 16 generations, completions up to 500"),
    "1.5B": (7 * 12, 100, 400, "DataParallel notebook: 7 prompts x 12 generations, completions up to 400"),
}


def activation_bytes(cfg: Qwen2Config, seqs: int, length: int, completion: int, checkpointing: bool = False,
                     s: int = 2) -> dict[str, float]:
    """Bytes autograd keeps for the backward of one forward over `seqs` x `length` tokens (dtype of
    `s` bytes), split into the decoder layers and the head (logits + log-softmax of the completion).

    Per token and layer, what our Qwen2 saves (listed by `measure_saved_bytes` on the tiny model):
    each RMSNorm its float32 input (4C), 1/rms (4) and the rounded normalised x (sC); the q/k/v
    projections their input (sC); attention q, k, v after RoPE and its output, which is also the
    output projection's input (s(2H + 2KV)D), and a float32 log-sum-exp per head (4H); the MLP its
    input (sC), gate, up, silu(gate) and down's input (4sI). RoPE keeps only its shared cos/sin
    tables; residual additions keep nothing.
    """
    C, I, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    H, KV, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_size
    norm = 4 * C + 4 + s * C
    attention = s * C + s * (2 * H + 2 * KV) * D + 4 * H
    mlp = s * C + 4 * s * I
    per_layer = 2 * norm + attention + mlp                                   # bytes per token
    tokens = seqs * length
    layers = tokens * (L * s * C + per_layer) if checkpointing else tokens * L * per_layer
    final_norm = tokens * norm
    # the LM head's input (sC per token), then log-softmax over the completion's logits in float32
    head = tokens * s * C + seqs * completion * cfg.vocab_size * 4
    return {"layers": layers + final_norm, "head": head}


def measure_saved_bytes(model: torch.nn.Module, seqs: int, length: int, completion: int) -> int:
    """Bytes of every tensor autograd saves in the forward + log-probability computation (weights excluded)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = max(seen.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    ids = torch.randint(0, model.config.vocab_size, (seqs, length))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(ids)                                                          # (B, T, V)
        logp = F.log_softmax(logits[:, -completion - 1:-1].float(), dim=-1)          # (B, k, V)
        logp.gather(-1, ids[:, -completion:, None]).sum().backward()
    return sum(seen.values())


def gpu_table(name: str, checkpointing: bool) -> None:
    cfg = Qwen2Config(**MODELS[name])
    with torch.device("meta"):
        n = Qwen2(cfg).num_parameters()
    seqs, prompt, completion, source = BOOK_RUNS[name]
    length = prompt + completion
    act = activation_bytes(cfg, seqs, length, completion, checkpointing)
    kv = cfg.num_hidden_layers * 2 * seqs * cfg.num_key_value_heads * length * cfg.head_size * 2
    rows = [("policy weights (bf16)", 2 * n), ("gradients (bf16)", 2 * n), ("AdamW moments (bf16)", 4 * n),
            ("reference model (bf16)", 2 * n), ("rollout KV cache", kv),
            (f"activations, decoder layers{' (checkpointed)' if checkpointing else ''}", act["layers"]),
            ("logits + log-softmax of the completion", act["head"])]
    total = sum(b for _, b in rows)
    print(f"\nQwen2.5-{name}-Instruct: {n / 1e6:.0f} M parameters; {source}\n"
          f"  = {seqs} sequences x ({prompt} prompt + {completion} completion) tokens, one update on all of them")
    for label, b in rows:
        print(f"  {label:48s} {b / GB:7.2f} GB")
    print(f"  {'total':48s} {total / GB:7.2f} GB   (float32 AdamW moments: +{4 * n / GB:.2f} GB)")
    micro = 8                                       # gradient accumulation over micro-batches of 8 sequences
    small = activation_bytes(cfg, micro, length, completion, checkpointing)
    fixed = total - act["layers"] - act["head"]
    print(f"  {'total with micro-batches of ' + str(micro) + ' sequences':48s} "
          f"{(fixed + small['layers'] + small['head']) / GB:7.2f} GB")


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
    measured = measure_saved_bytes(tiny, args.seqs, args.length, args.completion)
    formula = sum(activation_bytes(tiny.config, args.seqs, args.length, args.completion).values())
    print(f"tiny Qwen2 (the fixtures' shapes, {n:,} parameters), bf16, {args.seqs} x {args.length} tokens, "
          f"log-probs of the last {args.completion}:")
    print(f"  weights + grads + AdamW (bf16) {8 * n / 1e6:.2f} MB; activations saved for backward: measured "
          f"{measured / 1e6:.2f} MB, formula {formula / 1e6:.2f} MB ({formula / measured:.3f}x)")
    for name in MODELS:
        gpu_table(name, checkpointing=False)
        gpu_table(name, checkpointing=True)


if __name__ == "__main__":
    main()
