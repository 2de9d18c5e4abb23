"""The fast path of a linear layer: oneDNN's CPU kernel when nothing needs gradients (optional reading).

Plain version: `torch.nn.functional.linear` (what `nn.Linear` calls). `linear` here computes the
same `y = x @ W.T + b` and is tested equal to it (tests/models/test_linear.py); it only speeds up
inference on the CPU. Switch it off with the environment variable `LM_FAST_LINEAR=0` (read at
import): then every call is `F.linear`.

`y = x @ W.T + b` is one formula, but PyTorch has more than one CPU kernel for it. `F.linear`
calls the BLAS library torch was built with (MKL in the pip wheels). oneDNN's inner product
(`torch.ops.mkldnn._linear_pointwise`, the kernel `torch.compile` emits for CPU linears) computes
the same product from the same `(out, in)` weight, with no copy or re-layout. On the 2-core AMD
EPYC machine we develop on it is 2.2x faster for the single row of a batch-1 decoding step
(it streams the weights at ~26 GB/s, MKL's matrix-vector product at ~12 GB/s), 1.6x for 8 rows
and 1.1x for 2,048 rows; GPT-2 124M decodes at 37-44 tokens/s instead of 22 at batch 1, and
190-221 instead of 122 at batch 8. Generation on the CPU is dominated by these products:
`bench/generate.py` measures the whole model.

oneDNN's op has no backward, so it is used only when autograd is off (`torch.no_grad()`,
`torch.inference_mode()`), on the CPU, in float32; training and every other case call
`F.linear`. Results agree with `F.linear` to float32 rounding (a different summation order),
tested in `tests/models/test_linear.py`.

    >>> layer = Linear(768, 3072)
    >>> with torch.no_grad():
    ...     y = layer(torch.randn(1, 1, 768))        # oneDNN on the CPU  (1, 1, 3072)
    >>> y = layer(torch.randn(4, 768))               # autograd on: F.linear  (4, 3072)
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

ENABLED = os.environ.get("LM_FAST_LINEAR", "1") != "0"   # LM_FAST_LINEAR=0: F.linear everywhere


def _find_onednn_linear():
    """oneDNN's linear op if this torch build has it and it computes a small product exactly right.

    The op is internal to torch (the name starts with `_`), so rather than trust its signature
    across versions we call it once on integers, where every kernel is exact, and otherwise
    fall back to `F.linear` everywhere.
    """
    if not ENABLED or not torch.backends.mkldnn.is_available():
        return None
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if op is None:
        return None
    x, w, b = torch.arange(6.0).view(2, 3), torch.arange(12.0).view(4, 3), torch.ones(4)
    try:
        with torch.no_grad():
            return op if torch.equal(_call(op, x, w, b), F.linear(x, w, b)) else None
    except (RuntimeError, TypeError):
        return None


def _call(op, rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """oneDNN's linear, `op(input, weight, bias, attr, scalars, algorithm)`:

    input (N, in) and weight (out, in), as F.linear takes them (no transpose, no packing);
    bias (out,) or None; attr "none": no pointwise operation fused after the product (oneDNN could
    fuse "relu", "gelu", ... here); scalars []: that fused operation's arguments (none);
    algorithm "": that operation's variant (e.g. "tanh" for gelu; none here).
    """
    return op(rows, weight, bias, "none", [], "")


_ONEDNN_LINEAR = _find_onednn_linear()      # looked up once, at import
ONEDNN_AVAILABLE = _ONEDNN_LINEAR is not None


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True when `linear(x, weight)` takes oneDNN's kernel rather than `F.linear`."""
    return (_ONEDNN_LINEAR is not None and not torch.is_grad_enabled()
            and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and weight.device.type == "cpu" and x.dim() >= 1 and x.numel() > 0)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`: x (..., in), weight (out, in), bias (out,) -> (..., out)."""
    if (not uses_onednn(x, weight) or weight.dim() != 2 or x.shape[-1] != weight.shape[1]
            or (bias is not None and (bias.shape != weight.shape[:1] or bias.dtype != weight.dtype))):
        return F.linear(x, weight, bias)                      # also words any shape error
    rows = x.reshape(-1, x.shape[-1])                          # (N, in)
    y = _call(_ONEDNN_LINEAR, rows, weight, bias)             # (N, out)
    return y.view(*x.shape[:-1], weight.shape[0])              # (..., out)


class Linear(nn.Linear):
    """`nn.Linear` whose forward is `linear` above: the same parameters, init and state-dict keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
