"""Stage grpo_ddp: the grpo stage with GRPO data-parallel over 2 processes (torch.distributed, gloo).

The same settings, data and pipeline as stage `grpo`; the GRPO part runs in 2 fresh processes
started by `lm.rl.distributed.spawn` (no shell script). Each rank rolls out and scores its own
half of the step's prompts (a group never spans ranks), gradients are averaged by our bucketed
all-reduce, and the ranks' parameters are checked identical after the first step and at every
checkpoint. The book's "multi-GPU" notebook is one process with layers split over GPUs
(`nn.DataParallel` is built but never called); this is real data parallelism.
"""
from __future__ import annotations

from pathlib import Path

from lm.stages import RunConfig
from lm.stages import grpo

KEY_METRICS = grpo.KEY_METRICS
DATA_FILES = grpo.DATA_FILES
NEEDS_GPT2 = True
USES_MODEL = True
RANKS = 2                    # processes (CPU: gloo; CUDA: nccl, one GPU each)
Settings = grpo.Settings


def run(cfg: RunConfig, s: Settings, data_dir: Path, out_dir: Path) -> dict:
    return grpo.run(cfg, s, data_dir, out_dir, ranks=RANKS)
