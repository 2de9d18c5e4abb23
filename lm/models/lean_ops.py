"""Two of Qwen2's layers with hand-written backward passes that keep less for the backward.

What autograd keeps between a forward and its backward is most of a GRPO update's memory
(`bench/grpo_memory.py`). Written plainly, per token and layer:

    RMSNorm   keeps its float32 input (4C bytes), 1/rms and the rounded normalised x
    SwiGLU    down(silu(gate) * up) keeps gate, up, silu(gate) and the product (4 x I values)

`rms_norm` keeps the input in its own dtype and 1/rms (the float32 copy is recomputed), and
`swiglu_down` keeps gate and up only (silu and the product are recomputed for down's backward).
Forward values are exactly the plain formulas'; gradients equal them to float rounding (tested).
Qwen2 uses them only while autograd records (training); inference runs the plain code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

ENABLED = True          # False: Qwen2 trains through the plain formulas (bench/grpo_memory.py's baseline)


class _RMSNorm(torch.autograd.Function):
    """y = scale * (x_f32 * r).to(dtype), r = 1 / sqrt(mean(x_f32^2) + eps)."""

    @staticmethod
    def forward(ctx, x, scale, eps):
        h = x.float()                                                          # (..., C)
        r = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)                 # (..., 1)
        ctx.save_for_backward(x, scale, r)
        return scale * (h * r).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        x, scale, r = ctx.saved_tensors
        n = x.float() * r                                                      # (..., C) normalised, float32
        grad_scale = (g.float() * n.to(x.dtype).float()).reshape(-1, n.shape[-1]).sum(0).to(scale.dtype)
        dn = g.float() * scale.float()                                         # (..., C) d loss / d n
        dx = r * (dn - n * (dn * n).mean(-1, keepdim=True))                    # through n = x r(x)
        return dx.to(x.dtype), grad_scale, None


def rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """Qwen2's RMSNorm keeping x (its dtype) and 1/rms for the backward. x (..., C) -> (..., C)."""
    return _RMSNorm.apply(x, scale, eps)


class _SwiGLUDown(torch.autograd.Function):
    """y = (silu(gate) * up) @ W.T, keeping gate and up; silu and the product recomputed in backward."""

    @staticmethod
    def forward(ctx, gate, up, weight):
        ctx.save_for_backward(gate, up, weight)
        return F.linear(F.silu(gate) * up, weight)                             # (..., C)

    @staticmethod
    def backward(ctx, g):
        gate, up, weight = ctx.saved_tensors
        wide = (lambda t: t.float()) if gate.element_size() < 4 else (lambda t: t)   # bf16/fp16 math in float32
        s = torch.sigmoid(wide(gate))                                          # (..., I)
        silu = (wide(gate) * s).to(gate.dtype)                                 # as F.silu rounds it
        product = silu * up                                                    # (..., I)
        grad_w = g.reshape(-1, g.shape[-1]).T @ product.reshape(-1, product.shape[-1])   # (C, I)
        dp = wide(g @ weight)                                                  # (..., I) d loss / d product
        grad_up = (dp * wide(silu)).to(up.dtype)
        grad_gate = (dp * wide(up) * s * (1 + wide(gate) * (1 - s))).to(gate.dtype)  # silu' = s (1 + g (1 - s))
        return grad_gate, grad_up, grad_w.to(weight.dtype)


def swiglu_down(gate: torch.Tensor, up: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """down(silu(gate) * up) with down's (C, I) weight, keeping only gate and up. (..., I) -> (..., C)."""
    return _SwiGLUDown.apply(gate, up, weight)
