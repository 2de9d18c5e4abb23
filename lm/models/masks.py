"""What an attention model makes of the protocol's `attention_mask` and `position_ids`.

Generation feeds a batch of prompts padded on the *left* (every row's next token in the same
column), so every attention model here (chapter 4's decoder, GPT-2, Qwen2) needs the same four
answers, written once here:

- `check_mask_and_positions`: the inputs checked, a mask that hides nothing dropped, and the
  position ids each token gets (counted from the row's first real token);
- `positions_from_mask`: those position ids, from a left-padded mask;
- `causal_mask`: which keys each query may see (earlier or equal positions, not padding);
- `last_token_index`: where each row's last real token is (where a classifier head reads).

    attention_mask (B, past+T)   1 = real token, 0 = padding; covers cached and new positions
    position_ids   (B, T)        absolute positions of the T new tokens

    >>> m = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    >>> positions_from_mask(m).tolist()
    [[0, 0, 0, 1], [0, 1, 2, 3]]
    >>> last_token_index(torch.zeros(2, 4, dtype=torch.long), torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])).tolist()
    [1, 3]
"""
from __future__ import annotations

import torch

from lm.errors import ConfigError


def causal_mask(attention_mask: torch.Tensor | None, past: int, T: int,
                device: torch.device) -> torch.Tensor | None:
    """Boolean (B or 1, 1, T, past+T) mask, True = may attend; None when plain causal attention does.

    Query t sits at absolute position past + t and sees keys at positions <= its own that are
    not padding (`attention_mask` (B, past+T): 1 = real token, 0 = padding). A padding query
    would see nothing (a row of -inf gives NaN), so every query also sees itself; padding rows'
    outputs are never used. The one mask builder of every attention model here (GPT-2, Qwen2).
    """
    if attention_mask is None and (T == 1 or past == 0):
        return None                                                 # sdpa's is_causal does it
    S = past + T
    q_pos = torch.arange(past, S, device=device)[:, None]           # (T, 1)
    k_pos = torch.arange(S, device=device)[None, :]                 # (1, S)
    allowed = k_pos <= q_pos                                        # (T, S)
    if attention_mask is None:
        return allowed[None, None]                                  # (1, 1, T, S)
    keys = attention_mask[:, None, None, :].bool()                  # (B, 1, 1, S)
    return (allowed & keys) | (k_pos == q_pos)                      # (B, 1, T, S)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding: the first real token of each row gets position 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)      # (B, S)


def check_mask_and_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                             position_ids: torch.Tensor | None, past: int
                             ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The protocol's inputs, checked: (attention_mask or None when it hides nothing, position_ids (B or 1, T)).

    attention_mask (B, past+T) covers cached and new positions; position_ids default to counting
    each row's real tokens from the mask, else past..past+T-1.
    """
    if input_ids.dim() != 2:
        raise ConfigError(f"input_ids must have shape (batch, time), got {tuple(input_ids.shape)}")
    B, T = input_ids.shape
    if attention_mask is not None:
        if attention_mask.shape != (B, past + T):
            raise ConfigError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected "
                              f"{(B, past + T)} (it covers cached and new positions)")
        if bool(attention_mask.all()):
            attention_mask = None                                   # no padding: plain causal
    if position_ids is None:
        if attention_mask is not None:
            position_ids = positions_from_mask(attention_mask)[:, past:]                # (B, T)
        else:
            position_ids = torch.arange(past, past + T, device=input_ids.device)[None]  # (1, T)
    return attention_mask, position_ids


def last_token_index(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     pad_token_id: int | None = None) -> torch.Tensor:
    """(B,) index of each row's last real token: the rightmost mask-1 position, else the rightmost
    token that is not `pad_token_id`, else the last column (where a classifier head reads)."""
    B, T = input_ids.shape
    if attention_mask is not None:
        real = attention_mask.bool()                                # (B, T)
    elif pad_token_id is not None:
        real = input_ids != pad_token_id
    else:
        return torch.full((B,), T - 1, dtype=torch.long, device=input_ids.device)
    idx = torch.arange(T, device=input_ids.device)                  # (T,)
    return torch.where(real, idx, -1).max(dim=-1).values.clamp(min=0)  # (B,)
