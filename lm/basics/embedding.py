"""An embedding layer is a linear layer applied to one-hot vectors (chapter 1 / 2).

nn.Embedding(V, d) stores a (V, d) matrix E and returns row E[i] for token id i. A linear layer
with weight W of shape (d, V) (torch stores Linear weights as (out, in)) applied to the one-hot
vector e_i computes W e_i, the i-th column of W. So with W = E.T the two are the same function,
and the lookup is just the fast way to multiply by a one-hot vector: it reads one row instead of
doing a V-long dot product per output.

    >>> emb, lin = tied_pair(vocab_size=5, dim=3)
    >>> ids = torch.tensor([0, 4, 4])
    >>> torch.equal(emb(ids), lin(one_hot(ids, 5)))
    True
"""
from __future__ import annotations

import torch
import torch.nn as nn


def one_hot(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Float one-hot vectors: (...,) int ids -> (..., vocab_size)."""
    return torch.nn.functional.one_hot(ids, vocab_size).to(torch.get_default_dtype())


def tied_pair(vocab_size: int, dim: int, seed: int = 0) -> tuple[nn.Embedding, nn.Linear]:
    """An nn.Embedding and a bias-free nn.Linear holding the same numbers (W = E.T), not shared storage."""
    g = torch.Generator().manual_seed(seed)
    emb = nn.Embedding(vocab_size, dim)
    with torch.no_grad():
        emb.weight.copy_(torch.randn(vocab_size, dim, generator=g))  # (V, d)
    lin = nn.Linear(vocab_size, dim, bias=False)
    with torch.no_grad():
        lin.weight.copy_(emb.weight.T)  # (d, V)
    return emb, lin


def compare(vocab_size: int = 50, dim: int = 8, batch: int = 64, seed: int = 0, repeat_ids: bool = False) -> dict:
    """Run both layers on the same ids and the same random upstream gradient.

    Returns the largest absolute differences of the outputs and of the weight gradients
    (embedding gradient vs the transposed linear gradient). With distinct ids (the default) every
    product with a one-hot vector has a single non-zero term, so both differences are exactly 0.0.
    With `repeat_ids=True` a row's gradient is a sum over its occurrences, which the two layers may
    add in a different order: equal up to float rounding (~1e-7), not bit for bit.
    """
    g = torch.Generator().manual_seed(seed + 1)
    emb, lin = tied_pair(vocab_size, dim, seed)
    if repeat_ids:
        ids = torch.randint(0, vocab_size, (batch,), generator=g)  # (B,)
    else:
        if batch > vocab_size:
            raise ValueError(f"batch {batch} > vocab_size {vocab_size}: ids cannot all be distinct")
        ids = torch.randperm(vocab_size, generator=g)[:batch]      # (B,)
    upstream = torch.randn(batch, dim, generator=g)                 # (B, d) dLoss/dOutput
    out_emb = emb(ids)                                              # (B, d)
    out_lin = lin(one_hot(ids, vocab_size))                         # (B, d)
    (out_emb * upstream).sum().backward()
    (out_lin * upstream).sum().backward()
    return {
        "max_abs_diff_output": (out_emb - out_lin).abs().max().item(),
        "max_abs_diff_grad": (emb.weight.grad - lin.weight.grad.T).abs().max().item(),
        "rows_with_grad": int((emb.weight.grad.abs().sum(1) > 0).sum()),
        "distinct_ids": int(ids.unique().numel()),
    }
