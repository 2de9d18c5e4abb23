"""Shared test helpers: where ../shared is, a skip marker for tests that need it, and a fixture that
gives every test the process-wide state it found (no test leaks into the next one)."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import lm.utils

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LM_SHARED_DIR", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"
SHARED_GPT2 = SHARED / "gpt2"
SHARED_FIXTURES = SHARED / "fixtures"

needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real data not found at {SHARED_DATA}")
needs_gpt2_files = pytest.mark.skipif(not (SHARED_GPT2 / "vocab.json").is_file(),
                                      reason=f"GPT-2 tokenizer files not found at {SHARED_GPT2}")
needs_fixtures = pytest.mark.skipif(not SHARED_FIXTURES.is_dir(), reason=f"fixtures not found at {SHARED_FIXTURES}")

torch.set_num_threads(min(2, torch.get_num_threads()))


def global_state() -> dict:
    """What a test could change for every later test: torch's threads, default dtype and grad mode,
    the quiet flag (`lm.utils.set_quiet`), the environment variables. (Random states: see below.)"""
    environ = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}   # pytest's own, per test
    return {"threads": torch.get_num_threads(), "default_dtype": torch.get_default_dtype(),
            "grad_enabled": torch.is_grad_enabled(), "quiet": lm.utils.QUIET, "environ": environ}


def random_states() -> tuple:
    """The states of Python's `random`, NumPy's global generator and torch's generators."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


SESSION_START = global_state()        # tests/stages/test_state_after_stages.py compares the end of the run with it


def restore(state: dict, rng: tuple) -> None:
    if torch.get_num_threads() != state["threads"]:
        torch.set_num_threads(state["threads"])
    torch.set_default_dtype(state["default_dtype"])
    torch.set_grad_enabled(state["grad_enabled"])
    lm.utils.set_quiet(state["quiet"])
    now = global_state()["environ"]
    if now != state["environ"]:
        for key in set(now) - set(state["environ"]):
            del os.environ[key]
        os.environ.update(state["environ"])
    random.setstate(rng[0])
    np.random.set_state(rng[1])
    torch.set_rng_state(rng[2])
    if rng[3] is not None:
        torch.cuda.set_rng_state_all(rng[3])


@pytest.fixture(autouse=True)
def restore_global_state():
    """Every test ends with the state it started with (see `global_state`), and the random
    generators where they were: a test that seeds, sets one thread or goes quiet changes nothing
    for the tests after it, so no result depends on the order the tests run in."""
    state, rng = global_state(), random_states()
    yield
    restore(state, rng)


def tiny_gpt2(lines: list[str], n_positions: int):
    """A 2-layer width-32 GPT-2 (eval mode, seed 0) and a 300-token byte-level BPE trained on `lines`."""
    from lm.models.gpt2 import GPT2, GPT2Config
    from lm.tokenizers.gpt2 import GPT2Tokenizer
    tok = GPT2Tokenizer.train(lines, 300)
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=tok.vocab_size, n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
                            eos_token_id=tok.eot_id))
    return model.eval(), tok
