"""The mathematics of one GRPO update, each piece a plain function of tensors (book, GRPO programs).

    completion_mask   which completion tokens count: up to and including the first EOS
    token_log_probs   log p_T(token | tokens before it) for the completion tokens, where p_T is the
                      distribution the rollout sampled from: softmax(logits / temperature)
    group_advantages  (r - mean of the group) / (std of the group + 1e-4); equal rewards give 0
    grpo_loss         the clipped surrogate minus beta times the k3 KL, averaged per sequence

`lm/rl/grpo.py` runs them in its loop; tests/rl/test_grpo.py checks the loss against a token-by-token
transcription of the formula, and the fast log-probabilities against `token_log_probs_reference`.

Where we differ from the book: the book's `compute_log_probs` takes log_softmax of the raw logits,
although it samples at temperature 1.0 only; we divide the logits by the rollout's temperature, as
TRL's GRPOTrainer does, so the policy in the ratio and the KL is the one that sampled.
"""
from __future__ import annotations

import torch

from lm.models.fast_linear import linear

CHUNK_ELEMENTS = 2 ** 22           # logits materialised at once by `chosen_log_probs` (16 MB in float32; see there)


def completion_mask(completion: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 up to and including the first EOS of each row, 0 after it. (N, K) -> (N, K) long.

    >>> completion_mask(torch.tensor([[5, 9, 2, 9], [5, 6, 7, 8]]), eos_id=9).tolist()
    [[1, 1, 0, 0], [1, 1, 1, 1]]
    """
    is_eos = (completion == eos_id).long()
    seen_before = is_eos.cumsum(1) - is_eos                                    # EOS strictly before t
    return (seen_before == 0).long()


# --------------------------------------------------------------------------------------------
# Log-probabilities of the chosen tokens
# --------------------------------------------------------------------------------------------

def token_log_probs_reference(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                              k: int, temperature: float = 1.0, where: torch.Tensor | None = None) -> torch.Tensor:
    """The book's formulation: every position's logits, log_softmax over the vocabulary, gather.
    (N, T + k) -> (N, k). Kept as the oracle for `token_log_probs`; it holds (N, k, V) floats.
    With `where` (N, k), positions outside it are set to 0 afterwards (computed all the same)."""
    logits = model(input_ids, attention_mask=attention_mask)[:, -k - 1:-1].float() / temperature  # (N, k, V)
    logp = logits.log_softmax(-1).gather(-1, input_ids[:, -k:, None]).squeeze(-1)                # (N, k)
    return logp if where is None else logp.masked_fill(~where.bool(), 0.0)


def token_log_probs(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    k: int, temperature: float = 1.0, where: torch.Tensor | None = None) -> torch.Tensor:
    """log p_T(token_t | tokens before t) of the last k tokens of every row. (N, T + k) -> (N, k).

    The output layer runs only at the positions that predict completion tokens: all k of them, or
    with `where` (N, k), e.g. the completion mask, only where it is nonzero (the tokens after a
    row's first EOS are never read by the loss); the others are 0. `chosen_log_probs` never
    holds more than CHUNK_ELEMENTS logits (nor keeps any for backward).
    Models without `hidden_states` / `output_weight` take the reference path.
    """
    if not (hasattr(model, "hidden_states") and hasattr(model, "output_weight")):
        return token_log_probs_reference(model, input_ids, attention_mask, k, temperature, where)
    h = model.hidden_states(input_ids, attention_mask)[:, -k - 1:-1]                   # (N, k, C)
    targets = input_ids[:, -k:]                                                        # (N, k)
    if where is None:
        N, _, C = h.shape
        logp = chosen_log_probs(h.reshape(N * k, C), model.output_weight(), targets.reshape(-1),
                                1.0 / temperature)                                      # (N k,)
        return logp.view(N, k)                                                         # (N, k)
    used = where.bool()                                                                # (N, k)
    logp = chosen_log_probs(h[used], model.output_weight(), targets[used], 1.0 / temperature)  # (used,)
    return torch.zeros(used.shape, dtype=logp.dtype, device=logp.device).masked_scatter(used, logp)  # (N, k)


def chosen_log_probs(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, scale: float = 1.0,
                     chunk_elements: int | None = None) -> torch.Tensor:
    """log_softmax(scale * h @ weight.T)[i, targets[i]] for every row i, in float32. h (M, C),
    weight (V, C), targets (M,) -> (M,).

    Equal to the plain formula (tested to 1e-6, gradients too), but the (M, V) logits exist one
    chunk of rows at a time: the forward keeps only each row's log-sum-exp, and the backward
    recomputes a chunk's logits to get softmax - one_hot. For Qwen2.5-0.5B at the book's shapes
    (64 x 500 completion tokens, V = 151,936) the plain formula holds 19 GB of float32 logits and
    as much again for their log-softmax; this holds 16 MB (CHUNK_ELEMENTS).

    Why 2**22 logits a chunk, and in place: on the CPU every pass over a chunk's logits is bound by
    memory, not arithmetic. A fresh tensor above 32 MB comes from the operating system each time
    (glibc's largest mmap threshold: every page faulted in again) and misses the 32 MB L3 cache;
    16 MB chunks reused in place stay in it. With GPT-2's vocabulary, 2,048 rows and one thread this
    took the forward + backward from 5.0 s (64 MB chunks, a new tensor per operation) to 1.8-1.9 s.
    """
    rows = max(1, (chunk_elements or CHUNK_ELEMENTS) // weight.shape[0])             # rows of logits at a time
    return _ChosenLogProb.apply(h, weight, targets, scale, rows)


class _ChosenLogProb(torch.autograd.Function):
    """d/dz [z_y - logsumexp(z)] = one_hot(y) - softmax(z), with z = scale * h @ W.T."""

    @staticmethod
    def forward(ctx, h, weight, targets, scale, rows):
        M = h.shape[0]
        lse = torch.empty(M, dtype=torch.float32, device=h.device)                     # (M,)
        chosen = torch.empty(M, dtype=torch.float32, device=h.device)                  # (M,)
        for s in range(0, M, rows):
            z = _scaled_logits(h[s:s + rows], weight, scale)                           # (m, V) float32
            chosen[s:s + rows] = z.gather(-1, targets[s:s + rows, None]).squeeze(-1)
            top = z.amax(-1, keepdim=True)                                             # (m, 1)
            lse[s:s + rows] = z.sub_(top).exp_().sum(-1).log_() + top.squeeze(-1)     # in place: z is ours
        ctx.save_for_backward(h, weight, targets, lse)
        ctx.scale, ctx.rows = scale, rows
        return chosen - lse                                                            # (M,)

    @staticmethod
    def backward(ctx, grad):                                                           # grad (M,)
        h, weight, targets, lse = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        w32 = weight.float()                                                           # (V, C), no copy in float32
        for s in range(0, h.shape[0], ctx.rows):
            hs, g = h[s:s + ctx.rows], grad[s:s + ctx.rows, None].float() * ctx.scale  # (m, C), (m, 1)
            dz = _scaled_logits(hs, weight, ctx.scale).sub_(lse[s:s + ctx.rows, None]).exp_()   # (m, V) softmax
            dz.mul_(-g).scatter_add_(1, targets[s:s + ctx.rows, None], g)             # scale (one_hot - softmax) g
            if need_h:
                grad_h[s:s + ctx.rows] = (dz @ w32).to(h.dtype)                        # (m, C)
            if need_w:
                grad_w.addmm_(dz.T, hs.float())                                        # (V, C)
        return grad_h, None if grad_w is None else grad_w.to(weight.dtype), None, None, None


def _scaled_logits(h: torch.Tensor, weight: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * h @ weight.T as a new float32 tensor (m, V) that the caller may overwrite."""
    z = linear(h, weight)                                                              # (m, V)
    z = z.float() if z.dtype != torch.float32 else z
    return z.mul_(scale) if scale != 1.0 else z


# --------------------------------------------------------------------------------------------
# Advantages and the loss
# --------------------------------------------------------------------------------------------

def group_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(r - mean of its group) / (std of its group + 1e-4), std unbiased as torch's default.

    A group whose completions all got the same reward carries no signal: its advantages are
    exactly 0 (in float32, 2.8 - mean([2.8] * 8) is not 0, so equal groups are set to 0 by rule).
    >>> group_advantages(torch.tensor([1.0, 3.0, 2.0, 2.0]), 2).tolist()
    [-0.70705..., 0.70705..., 0.0, 0.0]
    """
    r = rewards.view(-1, group_size)                                            # (B, G)
    adv = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)      # (B, G)
    equal = (r == r[:, :1]).all(1, keepdim=True)                                # (B, 1)
    return adv.masked_fill(equal, 0.0).view(-1)


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, beta: float, epsilon: float) -> tuple[torch.Tensor, dict]:
    """The book's GRPO loss. All (N, K) but `advantages` (N,); mask 1 on completion tokens.

        ratio_t     = exp(logp_t - old_logp_t)
        surrogate_t = min(ratio_t * A, clip(ratio_t, 1 - epsilon, 1 + epsilon) * A)
        kl_t        = exp(ref_t - logp_t) - (ref_t - logp_t) - 1        (the k3 estimator, >= 0)
        loss        = - mean over sequences of  sum_t mask_t (surrogate_t - beta kl_t) / sum_t mask_t

    Each sequence's tokens are averaged first, then the sequences (TRL's loss_type="grpo"), so a
    short completion weighs as much as a long one. Returns the loss and {"kl", "clip_fraction"}
    (token means over the masked tokens).
    """
    mask = mask.to(logp.dtype)
    A = advantages[:, None]                                                     # (N, 1)
    ratio = torch.exp(logp - old_logp)                                          # (N, K)
    surrogate = torch.min(ratio * A, ratio.clamp(1 - epsilon, 1 + epsilon) * A)
    d = ref_logp - logp
    kl = torch.exp(d) - d - 1                                                   # (N, K)
    per_token = surrogate - beta * kl
    loss = -((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
    with torch.no_grad():
        clipped = ((ratio < 1 - epsilon) & (A < 0)) | ((ratio > 1 + epsilon) & (A > 0))
        n = mask.sum().clamp(min=1)
        stats = {"kl": float((kl * mask).sum() / n), "clip_fraction": float((clipped * mask).sum() / n)}
    return loss, stats
