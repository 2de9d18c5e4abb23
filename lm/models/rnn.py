"""The Elman recurrent neural network language model (book, chapter 3).

One Elman unit updates a hidden state from the previous one and the current input:

    h_t = tanh(x_t Wh + h_{t-1} Uh + b)

Stacking units feeds each layer's h_t to the next layer as its x_t. The language model embeds
tokens, runs the stack and maps every top-layer state to vocabulary logits with a linear layer:

    ids (B, T) -> embedding (B, T, C) -> RNN (B, T, C) -> linear (B, T, V)

Two formulations of the stack give the same numbers:
- `ElmanRNN.forward_reference`, the book's literal loop: for each position, for each layer, one
  unit call (two matmuls per unit per step);
- `ElmanRNN.forward`, the fast one: a layer's input projection x_t Wh does not depend on the
  hidden state, so it is one matmul over all positions at once; only h_{t-1} Uh stays in the loop.

Generation (lm/inference/generate.py) drives every model through one protocol,
`lm.inference.protocol.GenerationModel`: `forward(input_ids, attention_mask, position_ids, cache,
last_only)` and `new_cache(batch, max_len)`. An RNN's cache is simply its hidden state
(`RNNState`): a step feeds the newest token and the last state. With left padding, a padded
position leaves the state as it was (zero), so a padded row computes exactly what it would alone.
Position ids mean nothing to an RNN and are ignored.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from lm.errors import ConfigError


@dataclass
class RNNConfig:
    vocab_size: int                 # tokens in the vocabulary
    emb_dim: int = 128              # embedding and hidden-state width C (the book: 128)
    num_layers: int = 2             # stacked Elman units (the book: 2)
    pad_idx: int | None = None      # embedding row kept at zero, or None

    def __post_init__(self) -> None:
        if self.vocab_size < 1:
            raise ConfigError(f"vocab_size must be >= 1, got {self.vocab_size}")
        if self.emb_dim < 1 or self.num_layers < 1:
            raise ConfigError(f"ElmanRNN needs emb_dim >= 1 and num_layers >= 1, got {self.emb_dim}, {self.num_layers}")


class RNNState:
    """The RNN's generation cache: the hidden state of every layer after the tokens seen so far.

    Like the KV cache (lm/models/cache.py) it advances itself: `update` stores the states after
    T more tokens and counts them.
    """

    def __init__(self, num_layers: int, batch: int, emb_dim: int, dtype: torch.dtype, device: torch.device):
        self.h = torch.zeros(num_layers, batch, emb_dim, dtype=dtype, device=device)  # (L, B, C)
        self.length = 0                                                                # tokens seen

    def update(self, h: torch.Tensor, T: int) -> None:
        """Keep `h` (L, B, C), the states after T more tokens."""
        self.h, self.length = h, self.length + T


class ElmanRNNUnit(nn.Module):
    """One Elman unit: h = tanh(x Wh + h_prev Uh + b), all of width `emb_dim`."""

    def __init__(self, emb_dim: int):
        super().__init__()
        # zeros until the model calls initialize_weights (never uninitialised memory)
        self.Wh = nn.Parameter(torch.zeros(emb_dim, emb_dim))  # input -> hidden
        self.Uh = nn.Parameter(torch.zeros(emb_dim, emb_dim))  # hidden -> hidden
        self.b = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.Wh + h @ self.Uh + self.b)                  # (B, C)


class ElmanRNN(nn.Module):
    """A stack of `num_layers` Elman units; returns the top layer's state at every position."""

    def __init__(self, emb_dim: int, num_layers: int):
        super().__init__()
        if emb_dim < 1 or num_layers < 1:
            raise ConfigError(f"ElmanRNN needs emb_dim >= 1 and num_layers >= 1, got {emb_dim}, {num_layers}")
        self.emb_dim, self.num_layers = emb_dim, num_layers
        self.rnn_units = nn.ModuleList([ElmanRNNUnit(emb_dim) for _ in range(num_layers)])

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The book's loop: positions outer, layers inner. x (B, T, C) -> (B, T, C)."""
        B, T, C = x.shape
        h_prev = [x.new_zeros(B, C) for _ in range(self.num_layers)]
        outputs = []
        for t in range(T):
            inp = x[:, t]                                                      # (B, C)
            for layer, unit in enumerate(self.rnn_units):
                h_prev[layer] = unit(inp, h_prev[layer])
                inp = h_prev[layer]
            outputs.append(inp)
        return torch.stack(outputs, dim=1)                                     # (B, T, C)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Fast path: layers outer; each layer's input projection is one matmul. x (B, T, C).

        mask (B, T), 1 = real token: at a 0 the state is carried over unchanged. h0 (L, B, C): the
        states to start from (zeros if None). Returns (top-layer states (B, T, C), last states (L, B, C)).
        """
        B, T, C = x.shape
        seq, last = x, []
        keep = None if mask is None else mask.to(torch.bool)[:, :, None]      # (B, T, 1)
        for layer, unit in enumerate(self.rnn_units):
            xw = seq @ unit.Wh + unit.b                                        # (B, T, C), all positions at once
            h = x.new_zeros(B, C) if h0 is None else h0[layer]                 # (B, C)
            hs = []
            for t in range(T):
                new = torch.tanh(xw[:, t] + h @ unit.Uh)                       # (B, C)
                h = new if keep is None else torch.where(keep[:, t], new, h)
                hs.append(h)
            seq = torch.stack(hs, dim=1)                                       # (B, T, C)
            last.append(h)
        return seq, torch.stack(last)                                          # (B, T, C), (L, B, C)


class RecurrentLanguageModel(nn.Module):
    """Embedding -> stacked Elman RNN -> linear output layer (book, 3.x).

    >>> m = RecurrentLanguageModel(RNNConfig(vocab_size=100, emb_dim=16, num_layers=2))
    >>> m(torch.zeros(3, 7, dtype=torch.long)).shape
    torch.Size([3, 7, 100])
    """

    def __init__(self, config: RNNConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.emb_dim, padding_idx=config.pad_idx)
        self.rnn = ElmanRNN(config.emb_dim, config.num_layers)
        self.fc = nn.Linear(config.emb_dim, config.vocab_size)
        self.reference = False  # True: run the book's literal loop (for tests and the benchmark)
        initialize_weights(self)

    def new_cache(self, batch: int, max_len: int) -> RNNState:
        """An all-zero hidden state for `batch` rows (the generation protocol; max_len is not needed)."""
        p = self.fc.weight
        return RNNState(self.config.num_layers, batch, self.config.emb_dim, p.dtype, p.device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: RNNState | None = None,
                last_only: bool = False) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, V) ((B, 1, V) with `last_only`): the generation
        protocol's forward (`lm.inference.protocol.GenerationModel`).

        attention_mask (B, past+T): at a 0 (left padding) the state is carried over unchanged. With
        right padding (training batches) it is not needed: a position only sees tokens to its left.
        cache: an RNNState to continue from; it is updated in place. position_ids are ignored.
        """
        if input_ids.dim() != 2:
            raise ConfigError(f"input_ids must have shape (batch, time), got {tuple(input_ids.shape)}")
        T = input_ids.shape[1]
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask[:, -T:]                                      # (B, T): the new positions
        emb = self.embedding(input_ids)                                        # (B, T, C)
        if self.reference and mask is None and cache is None:
            h = self.rnn.forward_reference(emb)                                # (B, T, C)
        else:
            h, last = self.rnn(emb, mask, cache.h if cache is not None and cache.length else None)
            if cache is not None:
                cache.update(last, T)
        if last_only:
            h = h[:, -1:]                                                      # (B, 1, C)
        return self.fc(h)                                                      # (B, T, V)


def initialize_weights(model: nn.Module) -> None:
    """The book's initialisation: Xavier-uniform for every matrix, zeros for every bias vector."""
    for name, p in model.named_parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
        elif name.endswith("b") or name.endswith("bias"):
            nn.init.zeros_(p)
