"""What GRPO's log-probabilities keep for the backward pass (bench/grpo_memory.py computes it at the
book's sizes): the chunked path keeps far less than the book's full log_softmax, with the same values
and gradients, and runs the output layer only at the positions the loss reads."""
from __future__ import annotations

import torch

from lm.models.qwen2 import Qwen2, Qwen2Config
from lm.rl import objective
from lm.rl.objective import token_log_probs, token_log_probs_reference
from lm.utils import saved_tensor_bytes


def wide_vocab_qwen2(seed: int = 0) -> Qwen2:
    """A tiny Qwen2 whose vocabulary is large next to its width, as in the real models (151,936 vs 896)."""
    torch.manual_seed(seed)
    return Qwen2(Qwen2Config(vocab_size=2048, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)).train()


def batch(n: int = 4, t: int = 24, k: int = 16) -> tuple[torch.Tensor, torch.Tensor, int]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 2048, (n, t), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0                                                             # some left padding
    return ids, mask, k


def saved_bytes_and_grads(fn, **kwargs) -> tuple[int, torch.Tensor, dict[str, torch.Tensor]]:
    """Bytes of every non-weight tensor autograd saves while `fn` computes the log-probs and their
    backward (shared storage once), the log-probs, and the parameters' gradients."""
    model = wide_vocab_qwen2()
    ids, mask, k = batch()

    def forward_backward():
        logp = fn(model, ids, mask, k, 0.7, **kwargs)                           # (N, k)
        (logp * torch.linspace(-1, 1, logp.numel()).view_as(logp)).sum().backward()
        return logp
    saved, logp = saved_tensor_bytes(model, forward_backward)
    return saved, logp.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_the_chunked_log_probs_keep_far_less_than_the_full_log_softmax_with_the_same_values():
    """The book's formulation keeps (N, k, V) float32 log-softmax; ours one log-sum-exp per token.
    Fails if token_log_probs goes back to a full log_softmax (its bytes would equal the reference's)."""
    ours, logp, grads = saved_bytes_and_grads(token_log_probs)
    book, logp_ref, grads_ref = saved_bytes_and_grads(token_log_probs_reference)
    n, k = logp.shape
    assert book > n * k * 2048 * 4                                              # the float32 log-softmax is in it
    assert ours < 0.5 * book, (ours, book)
    torch.testing.assert_close(logp, logp_ref, atol=1e-6, rtol=0)
    for name, g in grads_ref.items():
        torch.testing.assert_close(grads[name], g, atol=1e-6, rtol=1e-5)


def test_the_output_layer_runs_only_where_the_loss_reads(monkeypatch):
    """With `where` (the completion mask), chosen_log_probs gets only those rows; the other positions
    are 0, the used ones equal the book's values, and the gradients equal the book's on the same loss."""
    rows = []
    real = objective.chosen_log_probs

    def counting(h, *args, **kwargs):
        rows.append(h.shape[0])
        return real(h, *args, **kwargs)
    monkeypatch.setattr(objective, "chosen_log_probs", counting)
    _, _, k = batch()
    where = torch.ones(4, k, dtype=torch.long)
    where[0, 5:] = 0                                                            # ended at its 5th token
    where[2, 11:] = 0
    _, logp, grads = saved_bytes_and_grads(token_log_probs, where=where)
    _, logp_ref, grads_ref = saved_bytes_and_grads(token_log_probs_reference, where=where)
    assert rows == [int(where.sum())]                                           # 4 * 16 - 11 - 5 rows, not 64
    assert torch.all(logp[where == 0] == 0) and torch.all(logp[where == 1] < 0)
    torch.testing.assert_close(logp, logp_ref, atol=1e-6, rtol=0)
    for name, g in grads_ref.items():
        torch.testing.assert_close(grads[name], g, atol=1e-6, rtol=1e-5)
