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
"""
from __future__ import annotations

import torch
import torch.nn as nn

from lm.utils import ConfigError


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fast path: layers outer; each layer's input projection is one matmul. x (B, T, C)."""
        B, T, C = x.shape
        seq = x
        for unit in self.rnn_units:
            xw = seq @ unit.Wh + unit.b                                        # (B, T, C), all positions at once
            h = x.new_zeros(B, C)
            hs = []
            for t in range(T):
                h = torch.tanh(xw[:, t] + h @ unit.Uh)                         # (B, C)
                hs.append(h)
            seq = torch.stack(hs, dim=1)                                       # (B, T, C)
        return seq


class RecurrentLanguageModel(nn.Module):
    """Embedding -> stacked Elman RNN -> linear output layer (book, 3.x).

    >>> m = RecurrentLanguageModel(vocab_size=100, emb_dim=16, num_layers=2)
    >>> m(torch.zeros(3, 7, dtype=torch.long)).shape
    torch.Size([3, 7, 100])
    """

    def __init__(self, vocab_size: int, emb_dim: int = 128, num_layers: int = 2, pad_idx: int | None = None):
        super().__init__()
        if vocab_size < 1:
            raise ConfigError(f"vocab_size must be >= 1, got {vocab_size}")
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=pad_idx)
        self.rnn = ElmanRNN(emb_dim, num_layers)
        self.fc = nn.Linear(emb_dim, vocab_size)
        self.reference = False  # True: run the book's literal loop (for tests and the benchmark)
        initialize_weights(self)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, V).

        attention_mask is accepted for the engine's sake and ignored: with right padding a position
        only ever sees tokens to its left, and padded positions carry no loss.
        """
        if input_ids.dim() != 2:
            raise ConfigError(f"input_ids must have shape (batch, time), got {tuple(input_ids.shape)}")
        emb = self.embedding(input_ids)                                        # (B, T, C)
        h = self.rnn.forward_reference(emb) if self.reference else self.rnn(emb)  # (B, T, C)
        return self.fc(h)                                                      # (B, T, V)


def initialize_weights(model: nn.Module) -> None:
    """The book's initialisation: Xavier-uniform for every matrix, zeros for every bias vector."""
    for name, p in model.named_parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
        elif name.endswith("b") or name.endswith("bias"):
            nn.init.zeros_(p)
