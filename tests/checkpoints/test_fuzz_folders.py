"""The folder fuzz: corrupted copies of the Qwen2, tokenizer, adapter and classifier fixtures end in
one LMError naming a file of the folder, or load and then work (tests/fuzz_folders.py has the
corruptions and the verdicts; every case runs in its own forked process with a timeout)."""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, SHARED_FIXTURES, needs_fixtures

WORKER = REPO / "tests" / "fuzz_folders.py"
TARGETS = ("qwen2", "tokenizer_json", "vocab_merges", "tokenizer_config", "adapter", "classifier")
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="the fuzz forks one process per case (POSIX only)")


def run_fuzz(tmp_path, per_target: int, seed: int) -> list[dict]:
    proc = subprocess.run([sys.executable, str(WORKER), str(SHARED_FIXTURES), str(tmp_path / "cases"),
                           str(per_target), str(seed)], capture_output=True, text=True, timeout=60 + 2 * per_target * 6,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)["results"]


def check(results: list[dict], per_target: int) -> None:
    failures = [r for r in results if r["outcome"] not in ("error", "loaded")]
    assert failures == [], "\n".join(f"{r['case']} {r['outcome']}: {r['mutation']}: {r.get('type')} "
                                     f"{r.get('message')}\n{r.get('where', '')}" for r in failures)
    references = [r for r in results if r.get("reference")]
    assert len(references) == 7 and all(r["outcome"] == "loaded" for r in references)   # the fixtures themselves
    counts = collections.Counter((r["target"], r["outcome"]) for r in results if not r.get("reference"))
    for target in TARGETS:
        assert counts[target, "error"] + counts[target, "loaded"] == per_target
        assert counts[target, "error"] >= per_target // 4, (target, counts)    # the corruptions do corrupt


@needs_fixtures
@needs_fork
def test_fuzz_corrupted_folders(tmp_path):
    """120 corruptions (20 per target): each refused with one error naming a file, or loaded and used."""
    check(run_fuzz(tmp_path, per_target=20, seed=25), per_target=20)


@pytest.mark.slow
@needs_fixtures
@needs_fork
def test_fuzz_corrupted_folders_large(tmp_path):
    """3,000 corruptions (500 per target), two seeds' worth of what the quick test does."""
    check(run_fuzz(tmp_path, per_target=500, seed=2025), per_target=500)
