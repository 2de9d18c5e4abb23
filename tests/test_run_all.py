"""run_all.py: --list, --only/--skip, a failing stage, summary.json."""
import importlib.util
import json
import types

import pytest

from conftest import REPO
import lm.stages
from lm.stages import STAGE_NAMES

spec = importlib.util.spec_from_file_location("run_all", REPO / "run_all.py")
run_all = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_all)


def test_list_shows_every_stage_in_book_order(capsys):
    assert run_all.main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == STAGE_NAMES
    assert lines[0].split()[1] == "ok"  # quadratic_loss exists


def test_only_runs_named_stages_and_writes_summary(tmp_path, capsys):
    rc = run_all.main(["--only", "quadratic_loss,embedding_vs_linear", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert list(s["stages"]) == ["quadratic_loss", "embedding_vs_linear"]
    q = s["stages"]["quadratic_loss"]
    assert q["status"] == "ok" and q["metrics"]["rel_error"] < 1e-6 and q["seconds"] >= 0
    assert s["stages"]["embedding_vs_linear"]["metrics"]["max_abs_diff_grad"] == 0.0
    assert "quadratic_loss" in capsys.readouterr().out  # the final table


def test_unknown_stage_name_is_refused():
    with pytest.raises(SystemExit, match="unknown stage.*nope"):
        run_all.main(["--only", "nope"])


def test_bad_data_dir_is_a_clear_error(tmp_path, capsys):
    assert run_all.main(["--data-dir", str(tmp_path / "missing"), "--only", "quadratic_loss"]) == 2
    assert "data dir does not exist" in capsys.readouterr().err


def test_failing_stage_is_reported_and_others_run(tmp_path, monkeypatch, capsys):
    real = run_all.load_stage
    broken = types.SimpleNamespace(run=lambda cfg, s, d, o: 1 / 0, Settings=lambda: None)

    def fake(name):
        if name == "embedding_vs_linear":
            return broken
        if name == "bpe":
            return None  # not implemented yet
        return real(name)
    monkeypatch.setattr(run_all, "load_stage", fake)
    monkeypatch.setattr(lm.stages, "load_stage", fake)
    rc = run_all.main(["--only", "quadratic_loss,embedding_vs_linear,bpe", "--out", str(tmp_path), "--quiet"])
    assert rc == 1
    s = json.loads((tmp_path / "summary.json").read_text())["stages"]
    assert s["quadratic_loss"]["status"] == "ok"
    assert s["embedding_vs_linear"]["status"] == "failed"
    assert "ZeroDivisionError" in s["embedding_vs_linear"]["error"]
    assert s["bpe"] == {"status": "skipped", "seconds": 0.0, "metrics": {}, "note": "not implemented"}
    assert "failed stages: embedding_vs_linear" in capsys.readouterr().err
