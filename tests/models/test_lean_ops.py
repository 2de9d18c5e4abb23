"""lm.models.lean_ops: Qwen2's RMSNorm and SwiGLU with hand-written backward passes keep less for the
backward, compute the same forward and the same gradients, and a whole GRPO update on a tiny Qwen2
is the same to 1e-6 with them and without them."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lm.models import lean_ops
from lm.models.lean_ops import rms_norm, swiglu_down
from lm.models.qwen2 import Qwen2, Qwen2Config
from lm.rl.distributed import Dist
from lm.rl.grpo import GRPOConfig, Rollout, grpo_update
from lm.rl.objective import group_advantages, token_log_probs
from lm.training.engine import TrainConfig, make_optimizer
from lm.utils import saved_tensor_bytes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rms_norm_and_swiglu_equal_the_plain_formulas(dtype):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16, dtype=dtype, requires_grad=True)
    w = (1 + 0.1 * torch.randn(16, dtype=dtype)).requires_grad_()
    g = torch.randn(3, 5, 16, dtype=dtype)

    def plain_norm(x, w):
        h = x.float()
        return w * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)).to(dtype)
    out = {}
    for name, fn in (("lean", lambda: rms_norm(x, w, 1e-6)), ("plain", lambda: plain_norm(x, w))):
        x.grad = w.grad = None
        y = fn()
        (y * g).sum().backward()
        out[name] = (y.detach(), x.grad.clone(), w.grad.clone())
    torch.testing.assert_close(out["lean"][0], out["plain"][0], atol=0, rtol=0)   # the same forward, bit for bit
    for a, b in zip(out["lean"][1:], out["plain"][1:]):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=0)

    G, U = (torch.randn(3, 5, 24, dtype=dtype, requires_grad=True) for _ in range(2))
    W = torch.randn(16, 24, dtype=dtype, requires_grad=True)
    out = {}
    for name, fn in (("lean", swiglu_down), ("plain", lambda G, U, W: F.linear(F.silu(G) * U, W))):
        G.grad = U.grad = W.grad = None
        y = fn(G, U, W)
        (y * g).sum().backward()
        out[name] = (y.detach(), G.grad.clone(), U.grad.clone(), W.grad.clone())
    for a, b in zip(out["lean"], out["plain"]):
        torch.testing.assert_close(a, b, atol=1e-5 if dtype == torch.float32 else 1e-12, rtol=1e-6)


def tiny(vocab=61):
    torch.manual_seed(0)
    return Qwen2(Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)).eval()


def rollout(vocab=61, n=8, t=6, k=5):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, vocab, (n, t + k), generator=g)
    cmask = torch.ones(n, k, dtype=torch.long)
    cmask[::3, 3:] = 0
    amask = torch.cat([torch.ones(n, t, dtype=torch.long), cmask], dim=1)
    return Rollout(ids, amask, cmask, [""] * n, [""] * n), torch.rand(n, generator=g) * 2.8


def test_a_grpo_update_is_the_same_with_and_without_lean_ops(monkeypatch):
    roll, rewards = rollout()
    after, saved = {}, {}
    for enabled in (True, False):
        monkeypatch.setattr(lean_ops, "ENABLED", enabled)
        model = tiny()
        cfg = GRPOConfig(prompts_per_step=4, group_size=2, lr=1e-3, beta=0.0, mu=2, temperature=0.8)
        opt = make_optimizer(model, TrainConfig(lr=cfg.lr, weight_decay=cfg.weight_decay))
        grpo_update(model, None, opt, roll, group_advantages(rewards, 2), cfg, Dist())
        after[enabled] = model.state_dict()
        k = roll.completion_mask.shape[1]
        saved[enabled], _ = saved_tensor_bytes(model, lambda: token_log_probs(
            model, roll.input_ids, roll.attention_mask, k).sum().backward())
    for key, v in after[False].items():
        torch.testing.assert_close(after[True][key], v, atol=1e-6, rtol=0)
    assert saved[True] < 0.8 * saved[False]                                      # and it keeps less
