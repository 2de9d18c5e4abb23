#!/usr/bin/env python
"""Run every program of the book, in book order, and print a table of results.

    python run_all.py                      # all stages, --quick sizes, embedded data
    python run_all.py --list               # the stages and whether each exists
    python run_all.py --only bpe,count_lm --data-dir ../shared/data --full

Each stage writes into OUT/<stage>/ and returns a dict of metrics; everything ends up in
OUT/summary.json as {"stages": {name: {"status", "seconds", "metrics"}}}. A failing stage is
reported with its error and the others still run; the exit status is 1 if any stage failed.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path

from lm.errors import LMError
from lm.data.loaders import resolve_data_dir
from lm.stages import STAGE_NAMES, RunConfig, load_stage, run_stage
from lm.utils import choose_device, set_quiet, write_summary


def parse_names(value: str | None, flag: str) -> list[str]:
    if not value:
        return []
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in STAGE_NAMES]
    if unknown:
        raise SystemExit(f"run_all.py: error: {flag}: unknown stage(s) {', '.join(unknown)}; "
                         f"known: {', '.join(STAGE_NAMES)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Run the book's programs end to end and summarise the results.")
    p.add_argument("--list", action="store_true", help="list the stages (and which exist) and exit")
    p.add_argument("--only", help="comma-separated stages to run, e.g. bpe,count_lm")
    p.add_argument("--skip", help="comma-separated stages to leave out")
    p.add_argument("--data-dir", help="data folder in the layout of data/ (default: $LM_DATA_DIR or the embedded data/)")
    p.add_argument("--out", help="output folder (default: runs/<timestamp>)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="quick", action="store_true", default=True,
                      help="small sizes: the whole run fits in about 10 minutes on 2 CPU cores (default)")
    size.add_argument("--full", dest="quick", action="store_false", help="the book's sizes (slow on a CPU)")
    p.add_argument("--seed", type=int, default=0, help="random seed for every stage (default 0)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument("--gpt2", default=None, help="folder with real GPT-2 weights (Hugging Face layout) for chapter 5")
    p.add_argument("--quiet", action="store_true", help="no progress output; only the final table")
    return p


def fmt_metrics(metrics: dict, keys: list[str] | None, limit: int = 3) -> str:
    keys = keys or [k for k, v in metrics.items() if isinstance(v, (int, float))][:limit]
    parts = []
    for k in keys:
        if k in metrics:
            v = metrics[k]
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for name in STAGE_NAMES:
            print(f"{name:22s} {'ok' if load_stage(name) else 'not implemented'}")
        return 0
    only, skip = parse_names(args.only, "--only"), parse_names(args.skip, "--skip")
    try:
        data_dir = resolve_data_dir(args.data_dir)
        choose_device(args.device)
    except LMError as e:
        print(f"run_all.py: error: {e}", file=sys.stderr)
        return 2
    set_quiet(args.quiet)
    try:
        return run_stages(args, data_dir, only, skip)
    finally:
        set_quiet(False)


def run_stages(args: argparse.Namespace, data_dir: Path, only: list[str], skip: list[str]) -> int:
    out = Path(args.out or f"runs/{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    cfg = RunConfig(quick=args.quick, seed=args.seed, device=args.device, quiet=args.quiet, gpt2=args.gpt2,
                    run_dir=out)

    summary: dict = {"data_dir": str(data_dir), "quick": cfg.quick, "seed": cfg.seed, "stages": {}}
    rows = []
    for name in STAGE_NAMES:
        if (only and name not in only) or name in skip:
            continue
        module = load_stage(name)
        if module is None:
            entry = {"status": "skipped", "seconds": 0.0, "metrics": {}, "note": "not implemented"}
            rows.append((name, "not implemented", 0.0, "skipped"))
        else:
            if not cfg.quiet:
                print(f"\n=== {name} ===", flush=True)
            t0 = time.perf_counter()
            try:
                metrics = run_stage(name, cfg, data_dir, out / name)
                entry = {"status": "ok", "metrics": metrics}
                shown = fmt_metrics(metrics, getattr(module, "KEY_METRICS", None))
            except LMError as e:
                entry = {"status": "failed", "metrics": {}, "error": f"{type(e).__name__}: {e}"}
                shown = entry["error"]
            except Exception as e:  # a bug: keep the traceback for the report, run the other stages
                entry = {"status": "failed", "metrics": {}, "error": f"{type(e).__name__}: {e}",
                         "traceback": traceback.format_exc()}
                shown = entry["error"]
                if not cfg.quiet:
                    traceback.print_exc()
            entry["seconds"] = round(time.perf_counter() - t0, 2)
            rows.append((name, shown, entry["seconds"], entry["status"]))
        summary["stages"][name] = entry
        write_summary(out, summary)  # after each stage, so a crash keeps the rest

    width = max([len(r[0]) for r in rows] + [5])
    print(f"\n{'stage':{width}s}  {'status':7s} {'seconds':>8s}  metrics")
    for name, shown, secs, status in rows:
        print(f"{name:{width}s}  {status:7s} {secs:8.1f}  {shown}")
    print(f"\nsummary: {out / 'summary.json'}")
    failed = [n for n, e in summary["stages"].items() if e["status"] == "failed"]
    if failed:
        print(f"failed stages: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
