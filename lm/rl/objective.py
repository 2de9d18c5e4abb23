"""The mathematics of one GRPO update, each piece a plain function of tensors (book, GRPO programs).

    completion_mask   which completion tokens count: up to and including the first EOS
    token_log_probs   log p(token | tokens before it) for the completion tokens, one forward pass
    group_advantages  (r - mean of the group) / (std of the group + 1e-4)
    grpo_loss         the clipped surrogate minus beta times the k3 KL, averaged per sequence

`lm/rl/grpo.py` runs them in its loop; tests/test_grpo.py checks the loss against a token-by-token
transcription of the formula.
"""
from __future__ import annotations

import torch


def completion_mask(completion: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 up to and including the first EOS of each row, 0 after it. (N, K) -> (N, K) long.

    >>> completion_mask(torch.tensor([[5, 9, 2, 9], [5, 6, 7, 8]]), eos_id=9).tolist()
    [[1, 1, 0, 0], [1, 1, 1, 1]]
    """
    is_eos = (completion == eos_id).long()
    seen_before = is_eos.cumsum(1) - is_eos                                    # EOS strictly before t
    return (seen_before == 0).long()


def token_log_probs(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    k: int) -> torch.Tensor:
    """log p(token_t | tokens before t) of the last k tokens of every row. (N, T + k) -> (N, k)."""
    logits = model(input_ids, attention_mask=attention_mask)[:, -k - 1:-1].float()   # (N, k, V)
    return logits.log_softmax(-1).gather(-1, input_ids[:, -k:, None]).squeeze(-1)    # (N, k)


def group_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(r - mean of its group) / (std of its group + 1e-4), std unbiased as torch's default.

    A group whose completions all got the same reward gives advantages 0 (not NaN).
    >>> group_advantages(torch.tensor([1.0, 3.0, 2.0, 2.0]), 2).tolist()
    [-0.70705..., 0.70705..., 0.0, 0.0]
    """
    r = rewards.view(-1, group_size)                                            # (B, G)
    return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).view(-1)


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, beta: float, epsilon: float) -> tuple[torch.Tensor, dict]:
    """The book's GRPO loss. All (N, K) but `advantages` (N,); mask 1 on completion tokens.

        ratio_t     = exp(logp_t - old_logp_t)
        surrogate_t = min(ratio_t * A, clip(ratio_t, 1 - epsilon, 1 + epsilon) * A)
        kl_t        = exp(ref_t - logp_t) - (ref_t - logp_t) - 1        (the k3 estimator, >= 0)
        loss        = - mean over sequences of  sum_t mask_t (surrogate_t - beta kl_t) / sum_t mask_t

    Returns the loss and {"kl", "clip_fraction"} (token means over the masked tokens).
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
