"""Stage embedding_vs_linear: nn.Embedding(i) == one_hot(i) @ W.T, forward and gradient, exactly."""
from __future__ import annotations

from pathlib import Path

from lm.embedding import compare
from lm.stages import RunConfig
from lm.utils import say

KEY_METRICS = ["max_abs_diff_output", "max_abs_diff_grad"]


def run(cfg: RunConfig, data_dir: Path, out_dir: Path) -> dict:
    m = compare(vocab_size=1000, dim=64, batch=256, seed=cfg.seed)
    r = compare(vocab_size=1000, dim=64, batch=4096, seed=cfg.seed, repeat_ids=True)
    say(f"embedding vs one-hot x linear, distinct ids: max |diff| output {m['max_abs_diff_output']}, "
        f"gradient {m['max_abs_diff_grad']}")
    say(f"with repeated ids (gradient rows are sums, added in another order): output "
        f"{r['max_abs_diff_output']}, gradient {r['max_abs_diff_grad']:.2e}")
    m["max_abs_diff_grad_repeated_ids"] = r["max_abs_diff_grad"]
    return m
