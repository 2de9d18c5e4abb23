"""Shared utilities: atomic writes, metrics log, progress bar, seeding, device choice."""
import io
import json
import random

import numpy as np
import pytest
import torch

from lm.errors import ConfigError
from lm.utils import MetricsLogger, Progress, atomic_open, atomic_write_json, choose_device, seed_everything


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "a" / "x.json"
    atomic_write_json(p, {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1}
    with pytest.raises(RuntimeError):
        with atomic_open(p) as f:
            f.write('{"half": ')
            raise RuntimeError("crash mid-write")
    assert json.loads(p.read_text()) == {"a": 1}          # old content intact
    assert sorted(x.name for x in p.parent.iterdir()) == ["x.json"]  # no temp file left


def test_metrics_logger_appends_jsonl(tmp_path):
    log = MetricsLogger(tmp_path / "m.jsonl")
    log.log(step=1, loss=2.5)
    log.log(step=2, loss=2.0)
    recs = log.read()
    assert [(r["step"], r["loss"]) for r in recs] == [(1, 2.5), (2, 2.0)]
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 2


def test_progress_plain_lines_rate_and_eta():
    buf = io.StringIO()  # not a TTY -> plain lines
    p = Progress(total=4, desc="train", unit="step", quiet=False, stream=buf, min_interval=0)
    for _ in range(4):
        p.update(1, loss=1.5)
    p.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in buf.getvalue()
    assert lines[-1].startswith("train: [") and "4/4" in lines[-1] and "step/s" in lines[-1]
    assert "eta 00:00" in lines[-1] and "loss=1.5" in lines[-1]


def test_progress_quiet_writes_nothing():
    buf = io.StringIO()
    assert list(Progress(range(3), quiet=True, stream=buf)) == [0, 1, 2]
    assert buf.getvalue() == ""


def test_seed_everything_reproduces_all_three():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(1))
    seed_everything(7)
    a = draw()
    seed_everything(7)
    assert draw() == a


def test_choose_device():
    assert choose_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="not a device"):
        choose_device("gpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            choose_device("cuda")
