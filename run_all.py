#!/usr/bin/env python
"""Run every program of the book, in book order, and print a table of results.

    python run_all.py                      # all stages, --quick sizes, embedded data
    python run_all.py --list               # the stages: available or not implemented yet (runs nothing)
    python run_all.py --only bpe,count_lm --data-dir ../shared/data --full
    python -m lm.report runs/<timestamp>   # rebuild a run's report.md (and its pictures)

Before the first stage starts, everything the run needs is checked (`lm/stages/preflight.py`): the
flags, every data file the selected stages read, the --model folder (--gpt2 is another name for it), the out
folder. Each problem is one line, all of them at once, and nothing runs.

Each stage writes into OUT/<stage>/ and returns a dict of metrics; everything ends up in
OUT/summary.json as {"stages": {name: {"status", "seconds", "metrics"}}}, and OUT/report.md shows
the results beside the book's, with pictures when matplotlib is installed. A stage that fails says
so where it stops (one line for a problem with its input, the traceback for a bug) and the others
still run. Ctrl-C (SIGINT) or SIGTERM (a scheduler, `timeout`, a container stopping) stops the
running stage: it is recorded as interrupted, the table, summary.json and report.md are written and
the exit status is 130 (SIGINT) or 143 (SIGTERM); a second signal exits at once. A SIGINT that
arrives ignored (a background job of a script: the shell ignores it there) stays ignored.
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import signal
import sys
import threading
import time
import traceback
from datetime import datetime
from pathlib import Path
from types import ModuleType

import torch

from lm.errors import LMError
from lm.report import format_metrics, write_report
from lm.stages import STAGE_NAMES, RunConfig, load_stage, run_stage
from lm.stages.preflight import Preflight, preflight
from lm.utils import set_quiet, write_summary

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
EXIT_CODES = f"""exit status:
  {EXIT_OK}    every stage ran ok (stages not implemented yet are skipped)
  {EXIT_FAILED}    a stage failed (the others still ran; see the table and OUT/summary.json)
  {EXIT_USAGE}    bad invocation: a flag, the data, --model (--gpt2) or --out is wrong; nothing was run
  {EXIT_INTERRUPTED}  interrupted with Ctrl-C (the running stage is recorded as interrupted)
  {EXIT_TERMINATED}  stopped with SIGTERM (as for Ctrl-C: the running stage is recorded as interrupted)"""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised wherever the run is, so it unwinds exactly as a Ctrl-C does (exit 143, not 130)."""


def _stop(signum, frame) -> None:
    """The first SIGINT or SIGTERM: stop what is running (the stage loop records it)."""
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _exit_now(signum, frame) -> None:
    """A second signal, while the summary and report are written: out at once."""
    os.write(2, b"\nrun_all.py: interrupted again: exiting now\n")
    os._exit(EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()   # only it may set handlers


def _on_signals(handler) -> None:
    """Send SIGINT and SIGTERM to `handler`; a SIGINT this process inherited as ignored stays ignored."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        if _in_main_thread() and not (sig == signal.SIGINT and signal.getsignal(sig) == signal.SIG_IGN):
            signal.signal(sig, handler)


def _handlers() -> dict:
    return {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore(handlers: dict) -> None:
    for sig, handler in handlers.items():
        if _in_main_thread():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def _signals_handled():
    """SIGINT and SIGTERM raise KeyboardInterrupt / Terminated inside the block; the previous
    handlers come back after it (main() is also called from tests and scripts)."""
    previous = _handlers()
    _on_signals(_stop)
    try:
        yield
    finally:
        _restore(previous)


class OneFolder(argparse.Action):
    """--model and --gpt2 are one flag: given twice with different folders is an error (exit 2),
    not silently the last one."""

    def __call__(self, parser, namespace, value, option_string=None):
        previous = getattr(namespace, self.dest)
        if previous is not None and previous != value:
            parser.error(f"{option_string} {value}: the base model is already {previous} "
                         "(--model and --gpt2 are one flag; give it once)")
        setattr(namespace, self.dest, value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Run the book's programs end to end and summarise the results.",
                                epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true",
                   help="list the stages and which are available (implemented); runs nothing")
    p.add_argument("--only", metavar="STAGES", help="comma-separated stages to run, e.g. bpe,count_lm")
    p.add_argument("--skip", metavar="STAGES", help="comma-separated stages to leave out")
    p.add_argument("--data-dir", metavar="DIR", help="data folder in the layout of data/ (default: $LM_DATA_DIR or the embedded data/)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: runs/<timestamp>)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="quick", action="store_true", default=True,
                      help="small sizes: the whole run fits in about 10 minutes on 2 CPU cores (default)")
    size.add_argument("--full", dest="quick", action="store_false", help="the book's sizes (slow on a CPU)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="random seed for every stage (default 0)")
    p.add_argument("--device", default=None, metavar="NAME", help="cpu, cuda, mps (default: best available)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads for every stage (default: torch's choice, one per core); "
                        "1 is faster for the small quick models on a busy machine")
    p.add_argument("--model", "--gpt2", dest="model", default=None, metavar="FOLDER", action=OneFolder,
                   help="real weights for chapter 5 instead of the small GPT-2s the run pretrains: a Hugging Face "
                        "GPT-2 or Qwen2 folder (model_type in config.json; weights and tokenizer), or a hub name "
                        "(gpt2, gpt2-medium, ..., Qwen/Qwen2.5-0.5B-Instruct) to download when online. --gpt2 is "
                        "the same flag under its old name. The stages that start from a pretrained model use it "
                        "(gpt2_pretrain, sampling, the fine-tuning stages, doc_labeling, grpo, grpo_ddp); "
                        "gpt2_pretrain, sampling and doc_labeling build GPT-2: with them it must be a GPT-2 folder")
    p.add_argument("--quiet", action="store_true", help="no progress output; only errors and the final table")
    return p


def list_stages() -> int:
    available = 0
    for name in STAGE_NAMES:
        try:
            state = "available" if load_stage(name) else "not implemented yet"
        except Exception as e:  # a stage whose module does not import: say so, list the rest
            state = f"broken ({type(e).__name__}: {e})"
        available += state == "available"
        print(f"{name:22s} {state}")
    print(f"\n{available} of {len(STAGE_NAMES)} stages available. --list runs nothing; "
          f"python run_all.py runs the available ones.")
    return EXIT_OK


def parse_names(value: str | None, flag: str, problems: list[str]) -> list[str] | None:
    """Stage names of --only / --skip (None: flag not given); bad names go to `problems`."""
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        problems.append(f"{flag} {value!r}: names no stage (give a comma-separated list, e.g. bpe,count_lm)")
    for n in names:
        if n not in STAGE_NAMES:
            close = difflib.get_close_matches(n, STAGE_NAMES, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            problems.append(f"{flag}: unknown stage {n!r} ({hint}known: {', '.join(STAGE_NAMES)})")
    return [n for n in names if n in STAGE_NAMES]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)          # a malformed flag: argparse's message, exit 2
    if args.list:
        return list_stages()
    with _signals_handled():
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    problems: list[str] = []
    only = parse_names(args.only, "--only", problems)
    skip = parse_names(args.skip, "--skip", problems) or []
    selected = [n for n in STAGE_NAMES if (only is None or n in only) and n not in skip]
    if not selected and not problems:
        problems.append("--only/--skip leave no stage to run")
    modules: dict[str, ModuleType | None] = {}
    broken: dict[str, BaseException] = {}
    for name in selected:
        try:
            modules[name] = load_stage(name)
        except Exception as e:      # a bug in the stage's module: it fails when its turn comes
            broken[name] = e
    out = Path(args.out or f"runs/{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    try:
        check = preflight({n: m for n, m in modules.items() if m is not None}, args.data_dir, out,
                          model=args.model, threads=args.threads, device=args.device)
    except KeyboardInterrupt as e:      # e.g. while --model gpt2 downloads
        print("\nrun_all.py: interrupted before the first stage; nothing was run", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED
    problems += check.problems
    if problems:
        for p in problems:
            print(f"run_all.py: error: {p}", file=sys.stderr)
        print(f"run_all.py: {len(problems)} problem(s) found before the first stage; nothing was run "
              f"(exit {EXIT_USAGE}; see --help)", file=sys.stderr)
        return EXIT_USAGE
    set_quiet(args.quiet)
    try:
        return run_stages(args, check, out, selected, modules, broken)
    finally:
        set_quiet(False)


def run_one(name: str, module: ModuleType | None, cfg: RunConfig, data_dir: Path, out: Path) -> dict:
    """One stage's summary entry. Our own errors (LMError) are one line, a bug its traceback,
    both printed here, where the stage stopped; KeyboardInterrupt goes through."""
    if module is None:
        return {"status": "skipped", "seconds": 0.0, "metrics": {}, "note": "not implemented"}
    if not cfg.quiet:
        print(f"\n=== {name} ===", flush=True)
    t0 = time.perf_counter()
    try:
        entry = {"status": "ok", "metrics": run_stage(name, cfg, data_dir, out / name, module=module)}
    except LMError as e:
        entry = {"status": "failed", "metrics": {}, "error": f"{type(e).__name__}: {e}", "error_type": type(e).__name__}
        print(f"{name}: failed: {entry['error']}".replace("\n", " "), file=sys.stderr, flush=True)
    except Exception as e:  # a bug: its traceback here, and the other stages still run
        traceback.print_exc()
        entry = {"status": "failed", "metrics": {}, "error": f"{type(e).__name__}: {e}", "error_type": type(e).__name__,
                 "traceback": traceback.format_exc()}
        print(f"{name}: failed with {type(e).__name__} (a bug: the traceback is above)", file=sys.stderr, flush=True)
    entry["seconds"] = round(time.perf_counter() - t0, 2)
    return entry


def run_stages(args: argparse.Namespace, check: Preflight, out: Path, selected: list[str],
               modules: dict[str, ModuleType | None], broken: dict[str, BaseException]) -> int:
    out.mkdir(parents=True, exist_ok=True)
    cfg = RunConfig(quick=args.quick, seed=args.seed, device=args.device, quiet=args.quiet, model=check.model,
                    threads=args.threads, run_dir=out)
    summary: dict = {"data_dir": str(check.data_dir), "quick": cfg.quick, "seed": cfg.seed,
                     "threads": cfg.threads or torch.get_num_threads(), "model": cfg.model,
                     "started": datetime.now().isoformat(timespec="seconds"), "status": "running", "stages": {}}
    stages = summary["stages"]
    running, t0 = None, 0.0
    previous_handlers = _handlers()
    try:
        try:
            for name in selected:
                running, t0 = name, time.perf_counter()
                if name in broken:
                    e = broken[name]
                    print(f"{name}: failed: its module does not import ({type(e).__name__}: {e})", file=sys.stderr)
                    stages[name] = {"status": "failed", "seconds": 0.0, "metrics": {},
                                    "error": f"{type(e).__name__}: {e}", "error_type": type(e).__name__,
                                    "traceback": "".join(traceback.format_exception(e))}
                else:
                    stages[name] = run_one(name, modules[name], cfg, check.data_dir, out)
                running = None
                write_summary(out, summary)  # after each stage, so a crash keeps the rest
            _on_signals(_exit_now)                         # from here on, a signal exits at once
            code = EXIT_FAILED if any(e["status"] == "failed" for e in stages.values()) else EXIT_OK
        except KeyboardInterrupt as e:                     # Ctrl-C, or SIGTERM (Terminated)
            _on_signals(_exit_now)                         # a second signal: out at once
            how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
            print(f"\nrun_all.py: {how}{f' during {running}' if running else ''}; writing the summary "
                  f"(Ctrl-C or SIGTERM again to exit at once)", file=sys.stderr, flush=True)
            if running:
                stages[running] = {"status": "interrupted", "seconds": round(time.perf_counter() - t0, 2), "metrics": {}}
            for name in selected:
                stages.setdefault(name, {"status": "not run", "seconds": 0.0, "metrics": {}})
            code = EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED
        summary.update(status={EXIT_OK: "ok", EXIT_FAILED: "failed", EXIT_INTERRUPTED: "interrupted",
                               EXIT_TERMINATED: "interrupted"}[code],
                       exit_code=code, finished=datetime.now().isoformat(timespec="seconds"))
        write_summary(out, summary)
        print_table(summary, modules)
        print(f"\nsummary: {out / 'summary.json'}")
        try:
            report = write_report(out)
            print(f"report:  {report.path}" + (f"  ({report.note})" if report.note else ""))
        except Exception as e:   # the run's results are safe in summary.json; say what went wrong
            print(f"report: not written ({type(e).__name__}: {e}); rebuild it with python -m lm.report {out}",
                  file=sys.stderr)
        failed = [n for n, e in stages.items() if e["status"] == "failed"]
        if failed:
            print(f"failed stages: {', '.join(failed)}", file=sys.stderr)
        return code
    finally:
        _restore(previous_handlers)


def print_table(summary: dict, modules: dict[str, ModuleType | None]) -> None:
    stages = summary["stages"]
    width = max([len(n) for n in stages] + [5])
    print(f"\n{'stage':{width}s}  {'status':11s} {'seconds':>8s}  metrics")
    for name, e in stages.items():
        if e["status"] == "failed":
            shown = e["error"].splitlines()[0] if e.get("error") else ""
        elif e["status"] == "skipped":
            shown = e.get("note", "")
        else:
            shown = format_metrics(e["metrics"], getattr(modules.get(name), "KEY_METRICS", None))
        print(f"{name:{width}s}  {e['status']:11s} {e['seconds']:8.1f}  {shown}")


if __name__ == "__main__":
    sys.exit(main())
