"""run_all.py: --list, --only/--skip, failing stages, exit codes, --threads, Ctrl-C, summary.json, report.md."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from dataclasses import dataclass

import pytest
import torch

from conftest import REPO
import lm.stages
from lm.data.loaders import EMBEDDED_DIR
from lm.errors import DataError
from lm.stages import STAGE_NAMES

spec = importlib.util.spec_from_file_location("run_all", REPO / "run_all.py")
run_all = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_all)


def fake_stage(run, key_metrics=None, data_files=()):
    """A stage module as run_all sees one: Settings, run, KEY_METRICS, DATA_FILES, NEEDS_GPT2."""
    @dataclass
    class Settings:
        pass
    return types.SimpleNamespace(Settings=Settings, run=run, KEY_METRICS=key_metrics, DATA_FILES=list(data_files),
                                 NEEDS_GPT2=False)


@pytest.fixture
def stages(monkeypatch):
    """Replace stages by name: stages({"bpe": module, None or an exception}); the others stay real."""
    def install(table: dict):
        real = lm.stages.load_stage

        def fake(name):
            if isinstance(table.get(name), Exception):    # a module that does not import
                raise table[name]
            return table[name] if name in table else real(name)
        monkeypatch.setattr(run_all, "load_stage", fake)
        monkeypatch.setattr(lm.stages, "load_stage", fake)
        monkeypatch.setattr(lm.stages.preflight, "load_stage", fake)
    return install


def test_list_says_available_not_ok(capsys):
    assert run_all.main(["--list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert [ln.split()[0] for ln in lines[:len(STAGE_NAMES)]] == STAGE_NAMES
    states = {ln.split()[0]: ln.split(None, 1)[1] for ln in lines[:len(STAGE_NAMES)]}
    assert states["quadratic_loss"] == "available"
    assert set(states.values()) <= {"available", "not implemented yet"}
    assert " ok" not in out and "--list runs nothing" in out


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as e:
        run_all.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for code, meaning in (("0", "every stage ran ok"), ("1", "a stage failed"), ("2", "bad invocation"),
                          ("130", "interrupted with Ctrl-C")):
        assert any(ln.split()[:1] == [code] and meaning in ln for ln in out.splitlines()), (code, out)
    assert "--threads N" in out


def test_only_runs_named_stages_and_writes_summary_and_report(tmp_path, capsys):
    rc = run_all.main(["--only", "quadratic_loss,embedding_vs_linear", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert list(s["stages"]) == ["quadratic_loss", "embedding_vs_linear"]
    assert s["status"] == "ok" and s["exit_code"] == 0
    q = s["stages"]["quadratic_loss"]
    assert q["status"] == "ok" and q["metrics"]["rel_error"] < 1e-6 and q["seconds"] >= 0
    assert s["stages"]["embedding_vs_linear"]["metrics"]["max_abs_diff_grad"] == 0.0
    out = capsys.readouterr().out
    assert "quadratic_loss" in out and f"report:  {tmp_path / 'report.md'}" in out   # the final table, the report
    assert "| quadratic_loss | ok |" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--only", "nope"], "--only: unknown stage 'nope'"),
    (["--skip", "count_lm,nope"], "--skip: unknown stage 'nope'"),
    (["--only", ""], "--only '': names no stage"),
    (["--only", " , "], "names no stage"),
])
def test_bad_stage_names_exit_2(argv, message, tmp_path, capsys):
    assert run_all.main(argv + ["--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_argparse_errors_also_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        run_all.main(["--threads", "many"])
    assert e.value.code == 2


def test_bad_data_dir_is_a_clear_error(tmp_path, capsys):
    assert run_all.main(["--data-dir", str(tmp_path / "missing"), "--only", "count_lm"]) == 2
    assert "data dir does not exist" in capsys.readouterr().err


def test_out_naming_a_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert run_all.main(["--only", "quadratic_loss", "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert f"--out {tmp_path / 'f'}: an existing file, not a folder" in err and "Traceback" not in err


def test_failures_are_reported_where_they_happen_and_others_run(tmp_path, stages, capsys):
    def expected(cfg, s, d, o):
        print("expected: started", flush=True)
        raise DataError(d / "brown/brown.txt", "only 0 tokens")

    def bug(cfg, s, d, o):
        print("bug: started", flush=True)
        return 1 / 0
    stages({"embedding_vs_linear": fake_stage(expected), "bpe": fake_stage(bug), "count_lm": None})
    rc = run_all.main(["--only", "quadratic_loss,embedding_vs_linear,bpe,count_lm", "--out", str(tmp_path)])
    assert rc == 1
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["status"] == "failed" and s["exit_code"] == 1
    st = s["stages"]
    assert st["quadratic_loss"]["status"] == "ok"
    e = st["embedding_vs_linear"]
    assert e["status"] == "failed" and e["error_type"] == "DataError" and "traceback" not in e
    assert e["error"] == f"DataError: {EMBEDDED_DIR / 'brown/brown.txt'}: only 0 tokens"
    b = st["bpe"]
    assert b["status"] == "failed" and b["error_type"] == "ZeroDivisionError" and "1 / 0" in b["traceback"]
    assert st["count_lm"] == {"status": "skipped", "seconds": 0.0, "metrics": {}, "note": "not implemented"}
    captured = capsys.readouterr()
    err = captured.err
    # the expected error: one line, right where the stage stopped; the bug: its traceback there
    line = [ln for ln in err.splitlines() if ln.startswith("embedding_vs_linear: failed: ")]
    assert line == [f"embedding_vs_linear: failed: {e['error']}"]
    assert err.index("embedding_vs_linear: failed") < err.index("Traceback") < err.index("bpe: failed with ZeroDivisionError")
    assert err.count("Traceback") == 1
    assert "failed stages: embedding_vs_linear, bpe" in err


def test_a_stage_module_that_does_not_import_fails_alone(tmp_path, stages, capsys):
    stages({"embedding_vs_linear": ImportError("cannot import name 'thing'")})
    rc = run_all.main(["--only", "quadratic_loss,embedding_vs_linear", "--out", str(tmp_path), "--quiet"])
    assert rc == 1
    st = json.loads((tmp_path / "summary.json").read_text())["stages"]
    assert st["quadratic_loss"]["status"] == "ok"
    assert st["embedding_vs_linear"]["status"] == "failed" and st["embedding_vs_linear"]["error_type"] == "ImportError"
    assert "embedding_vs_linear: failed: its module does not import" in capsys.readouterr().err


def test_threads_reach_every_stage(tmp_path, stages):
    seen = []

    def record(cfg, s, d, o):
        seen.append((cfg.threads, torch.get_num_threads()))
        return {}
    stages({"quadratic_loss": fake_stage(record), "embedding_vs_linear": fake_stage(record)})
    before = torch.get_num_threads()
    try:
        assert run_all.main(["--only", "quadratic_loss,embedding_vs_linear", "--threads", "1", "--out",
                             str(tmp_path), "--quiet"]) == 0
    finally:
        torch.set_num_threads(before)
    assert seen == [(1, 1), (1, 1)]
    assert json.loads((tmp_path / "summary.json").read_text())["threads"] == 1


# --------------------------------------------------------------------------------------------
# Ctrl-C, in a child process (a real SIGINT)
# --------------------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys, time, types, importlib.util
    from dataclasses import dataclass
    sys.path.insert(0, {repo!r})
    import lm.stages, lm.stages.preflight
    spec = importlib.util.spec_from_file_location("run_all", {run_all!r})
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)

    @dataclass
    class Settings:
        pass

    def slow(cfg, s, data_dir, out_dir):          # a stage that runs until interrupted
        print("slow stage started", flush=True)
        time.sleep(120)
        return {{}}

    def fast(cfg, s, data_dir, out_dir):
        return {{"x": 1.0}}

    real = lm.stages.load_stage
    def load(name):
        if name in ("quadratic_loss", "embedding_vs_linear"):
            run = slow if name == "embedding_vs_linear" else fast
            return types.SimpleNamespace(Settings=Settings, run=run, KEY_METRICS=None, DATA_FILES=[], NEEDS_GPT2=False)
        return real(name)
    run_all.load_stage = lm.stages.load_stage = lm.stages.preflight.load_stage = load

    if {slow_report}:                              # make the clean-up slow, to press Ctrl-C again during it
        def slow_report(out):
            print("writing the report", flush=True)
            time.sleep(120)
        run_all.write_report = slow_report
    sys.exit(run_all.main(["--only", "quadratic_loss,embedding_vs_linear,bpe", "--out", {out!r}, "--quiet"]))
""")


def start_child(tmp_path, slow_report=False, sigint=signal.SIG_DFL) -> subprocess.Popen:
    """run_all.py in a child process, started with SIGINT's default action (as from a terminal) even
    when pytest itself runs with SIGINT ignored (a background job of a script: `bash -c 'pytest &'`);
    `sigint=signal.SIG_IGN` starts it as such a background job instead."""
    script = CHILD.format(repo=str(REPO), run_all=str(REPO / "run_all.py"), out=str(tmp_path / "run"),
                          slow_report=slow_report)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path, preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))


def wait_for(proc: subprocess.Popen, text: str, timeout: float = 120.0) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen += line
        if text in line:
            return seen
    proc.kill()
    raise AssertionError(f"never saw {text!r}; stdout so far: {seen!r}; stderr: {proc.stderr.read()!r}")


def test_ctrl_c_records_the_running_stage_and_exits_130(tmp_path):
    proc = start_child(tmp_path)
    before = wait_for(proc, "slow stage started")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    out = before + out
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "interrupted during embedding_vs_linear" in err
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["status"] == "interrupted" and s["exit_code"] == 130 and "finished" in s
    st = s["stages"]
    assert list(st) == ["quadratic_loss", "embedding_vs_linear", "bpe"]          # complete: every selected stage
    assert st["quadratic_loss"]["status"] == "ok"
    assert st["embedding_vs_linear"]["status"] == "interrupted" and st["embedding_vs_linear"]["seconds"] >= 0
    assert st["bpe"]["status"] == "not run"
    table = out[out.index("stage "):]                                            # the final table was printed
    assert "embedding_vs_linear  interrupted" in table and "bpe" in table
    assert (tmp_path / "run" / "report.md").is_file()


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_second_signal_exits_at_once(tmp_path, sig, code):
    proc = start_child(tmp_path, slow_report=True)
    wait_for(proc, "slow stage started")
    proc.send_signal(sig)
    wait_for(proc, "writing the report")
    t0 = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == code and time.monotonic() - t0 < 10
    assert "exiting now" in err and "Traceback" not in err
    s = json.loads((tmp_path / "run" / "summary.json").read_text())   # written before the report
    assert s["status"] == "interrupted" and s["stages"]["embedding_vs_linear"]["status"] == "interrupted"


def test_sigterm_records_the_running_stage_writes_the_report_and_exits_143(tmp_path):
    """A scheduler, `timeout` or a stopping container sends SIGTERM: handled as Ctrl-C is, exit 143.
    The child starts with SIGINT ignored, as a background job of a script does: SIGTERM still works."""
    proc = start_child(tmp_path, sigint=signal.SIG_IGN)
    before = wait_for(proc, "slow stage started")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    out = before + out
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "terminated (SIGTERM) during embedding_vs_linear" in err
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["status"] == "interrupted" and s["exit_code"] == 143 and "finished" in s
    st = s["stages"]
    assert [st[n]["status"] for n in st] == ["ok", "interrupted", "not run"]
    assert "embedding_vs_linear  interrupted" in out[out.index("stage "):]
    assert (tmp_path / "run" / "report.md").is_file()


def test_main_gives_back_the_callers_signal_handlers(tmp_path, stages):
    """run_all.main installs its SIGINT / SIGTERM handlers for the run only (it is also a library call)."""
    def mine(signum, frame):
        pass
    stages({"quadratic_loss": fake_stage(lambda cfg, s, d, o: {})})
    old = signal.signal(signal.SIGTERM, mine), signal.getsignal(signal.SIGINT)
    try:
        assert run_all.main(["--only", "quadratic_loss", "--out", str(tmp_path), "--quiet"]) == 0
        assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGINT) is old[1]
    finally:
        signal.signal(signal.SIGTERM, old[0])


def test_sampling_fails_when_an_input_check_lets_bad_input_through(tmp_path, monkeypatch):
    """A stage that cannot do part of its job fails; it is never ok with a quiet message."""
    from lm.stages import sampling
    monkeypatch.setattr(sampling, "ERRORS", sampling.ERRORS + [("a valid input", dict(temperature=1.0))])
    with pytest.raises(RuntimeError, match="sample_token accepted invalid input: a valid input"):
        sampling.run(lm.stages.RunConfig(run_dir=tmp_path), sampling.Settings(draws=10), REPO / "data", tmp_path)


def test_without_matplotlib_one_line_says_how_to_get_the_pictures(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)                     # as if not installed
    assert run_all.main(["--only", "quadratic_loss", "--out", str(tmp_path), "--quiet"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "not installed" in ln]
    assert lines == [f"report:  {tmp_path / 'report.md'}  (pictures not drawn: matplotlib is not installed "
                     f"(pip install -e '.[plot]', then python -m lm.report {tmp_path}))"]
    assert "![" not in (tmp_path / "report.md").read_text()


def test_without_matplotlib_a_fresh_run_all_writes_the_report_and_says_why_no_pictures(tmp_path):
    """As a newcomer without the plot extra runs it: a new process where `import matplotlib` fails
    from the start (nothing imported it before), run_all.py as a script."""
    out = tmp_path / "run"
    script = ("import runpy, sys; sys.modules['matplotlib'] = None; "
              f"sys.argv = ['run_all.py', '--only', 'quadratic_loss', '--out', {str(out)!r}, '--quiet']; "
              f"runpy.run_path({str(REPO / 'run_all.py')!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert "pictures not drawn: matplotlib is not installed (pip install -e '.[plot]'" in proc.stdout
    report = (out / "report.md").read_text()
    assert "> pictures not drawn: matplotlib is not installed" in report and "![" not in report
    assert "quadratic_loss" in report and not (out / "plots").exists()
    assert json.loads((out / "summary.json").read_text())["stages"]["quadratic_loss"]["status"] == "ok"
