"""Stage embedding_vs_linear: nn.Embedding(i) == one_hot(i) @ W.T, forward and gradient, exactly."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lm.basics.embedding import compare
from lm.stages import RunConfig, quick_full
from lm.utils import say

KEY_METRICS = ["max_abs_diff_output", "max_abs_diff_grad"]
DATA_FILES: list[str] = []
NEEDS_GPT2 = False


@dataclass
class Settings:
    vocab_size: int = quick_full(1000, 1000)          # rows of the embedding
    dim: int = quick_full(64, 64)                     # embedding width
    batch: int = quick_full(256, 256)                 # distinct ids compared
    batch_repeated: int = quick_full(4096, 4096)      # ids drawn with repeats (gradient rows are sums)


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:
    m = compare(vocab_size=s.vocab_size, dim=s.dim, batch=s.batch, seed=cfg.seed)
    r = compare(vocab_size=s.vocab_size, dim=s.dim, batch=s.batch_repeated, seed=cfg.seed, repeat_ids=True)
    say(f"embedding vs one-hot x linear, distinct ids: max |diff| output {m['max_abs_diff_output']}, "
        f"gradient {m['max_abs_diff_grad']}")
    say(f"with repeated ids (gradient rows are sums, added in another order): output "
        f"{r['max_abs_diff_output']}, gradient {r['max_abs_diff_grad']:.2e}")
    m["max_abs_diff_grad_repeated_ids"] = r["max_abs_diff_grad"]
    return m
