"""No test leaks process-wide state into the next: torch's threads, default dtype and grad mode, the
quiet flag, environment variables, random states.

The autouse fixture `restore_global_state` (tests/conftest.py) puts them back after every test;
`run_stage` and `run_all.main` put back what they change themselves (threads, quiet, signal
handlers) for callers outside the tests. This file sorts after the stage tests (test_baselines,
test_finetune_stages, test_grpo, test_labeling_stage, test_run_all, ...), so its last test sees
the state those left behind.
"""
from __future__ import annotations

import importlib.util
import os
import random
import types
from dataclasses import dataclass

import numpy as np
import torch

import lm.utils
from conftest import REPO, SESSION_START, global_state
from lm.stages import RunConfig, run_stage


@dataclass
class Settings:
    pass


def greedy_stage(cfg, s, data_dir, out_dir) -> dict:
    """A stage that takes what it likes: one thread, whatever run_stage gave it."""
    torch.set_num_threads(1)
    return {"threads_inside": torch.get_num_threads()}


STAGE = types.SimpleNamespace(Settings=Settings, run=greedy_stage, KEY_METRICS=None, DATA_FILES=[], NEEDS_GPT2=False)


def test_run_stage_puts_torch_threads_back(tmp_path):
    torch.set_num_threads(2)
    for threads in (1, None):
        metrics = run_stage("fake", RunConfig(threads=threads, quiet=True), tmp_path, tmp_path / "out", module=STAGE)
        assert metrics == {"threads_inside": 1} and torch.get_num_threads() == 2


def test_run_all_main_puts_threads_and_quiet_back(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("run_all_state", REPO / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    monkeypatch.setattr(run_all, "load_stage", lambda name: STAGE if name == "quadratic_loss" else None)
    torch.set_num_threads(2)
    assert run_all.main(["--only", "quadratic_loss", "--threads", "1", "--quiet", "--out", str(tmp_path)]) == 0
    assert torch.get_num_threads() == 2 and lm.utils.QUIET is False


def test_a_test_that_changes_everything():
    """Leaks on purpose; the next test checks that nothing reached it."""
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    torch.set_grad_enabled(False)
    lm.utils.set_quiet(True)
    os.environ["LM_STATE_TEST_LEAK"] = "1"
    os.environ["HOME"] = "/nowhere"
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    global DRAWS_AFTER_SEED_123
    DRAWS_AFTER_SEED_123 = (random.random(), float(np.random.rand()), float(torch.rand(1)))


DRAWS_AFTER_SEED_123 = None


def test_the_next_test_finds_the_state_of_before():
    state = global_state()
    assert state["threads"] == SESSION_START["threads"] and state["default_dtype"] == torch.float32
    assert state["grad_enabled"] is True and state["quiet"] is False
    assert "LM_STATE_TEST_LEAK" not in os.environ and os.environ.get("HOME") == SESSION_START["environ"].get("HOME")
    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    assert DRAWS_AFTER_SEED_123 is not None and draws != DRAWS_AFTER_SEED_123   # not left seeded at 123


def test_after_the_stage_tests_the_state_is_the_sessions_start():
    """Run last in the default order (after every stage test): each piece of state as the session began."""
    assert global_state() == SESSION_START
