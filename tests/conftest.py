"""Shared test helpers: where ../shared is, and a skip marker for tests that need it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
