"""The whole GRPO experiment, as the book's programs run it, for every launcher.

    model folder -> [instruction tuning] -> evaluate -> [SFT warm-up -> evaluate] -> GRPO (1 or N ranks) -> evaluate

`run_grpo` is the one function behind `run_all.py --only grpo` / `grpo_ddp`, `python -m lm.rl.grpo`
and `torchrun --nproc_per_node=N -m lm.rl.grpo`: the same problem filtering, the same starting model,
the same metrics (accuracy, format rate and accuracy whatever the format, before and after; the
GRPO run's reward by part). The algorithm itself is `lm.rl.grpo.train_grpo`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Sequence

import torch

from lm.cli import add_dataclass_flags, dataclass_from_args
from lm.data.download import model_folder as model_folder_of
from lm.errors import ConfigError, LMError
from lm.models.auto import context_length, load_causal_lm
from lm.rl import distributed
from lm.rl.distributed import Dist
from lm.rl.grpo import GRPOConfig, train_grpo
from lm.rl.tasks import Problem, build_prompt, split_problems
from lm.rl.warmup import EvalConfig, InstructConfig, WarmupConfig, evaluate, instruction_tune, sft_warmup
from lm.tokenizers.hf_json import tokenizer_from_dir
from lm.utils import atomic_write_json, seed_everything, write_summary

# --------------------------------------------------------------------------------------------
# The whole experiment: the starting model, evaluation, GRPO on 1 or N ranks, evaluation
# --------------------------------------------------------------------------------------------

START_METRICS = "start_metrics.json"       # out_dir/: what was measured before GRPO (kept for --resume)


def fitting_problems(problems: Sequence[Problem], tokenizer, config, new_tokens: int) -> tuple[list[Problem], int]:
    """The problems whose prompt plus `new_tokens` fit the model's context, and how many did not.

    A small model (the quick GPT-2's 256 positions) cannot hold real GSM8K's longest prompts; they
    are left out with a warning rather than failing the run after the warm-up. None left is an error.
    """
    limit = context_length(config)
    if limit is None:
        return list(problems), 0
    kept = [p for p in problems if len(tokenizer.encode(build_prompt(p.question))) + new_tokens <= limit]
    if problems and not kept:
        raise ConfigError(f"no problem's prompt fits the model's context of {limit} tokens with {new_tokens} new "
                          f"tokens: use a model with a longer context (--model / --gpt2) or fewer new tokens")
    if len(kept) < len(problems):
        warnings.warn(f"{len(problems) - len(kept)} of {len(problems)} problems left out: prompt + {new_tokens} "
                      f"new tokens exceeds the model's context of {limit}")
    return kept, len(problems) - len(kept)


def problem_sets(data_dir: str | Path, tokenizer, config, cfg: GRPOConfig,
                 evaluation: EvalConfig) -> tuple[list[Problem], list[Problem], int]:
    """(training problems, held-out problems to evaluate, problems left out as too long): the same
    on every rank, for every launcher."""
    train, held_out = split_problems(data_dir)
    train, skipped = fitting_problems(train, tokenizer, config, cfg.max_new_tokens)
    held_out, skipped_eval = fitting_problems(held_out, tokenizer, config, evaluation.max_new_tokens)
    return train, held_out[:evaluation.problems], skipped + skipped_eval


def run_grpo(model_folder: str | Path, data_dir: str | Path, out_dir: str | Path, cfg: GRPOConfig,
             evaluation: EvalConfig | None = None, instruct: InstructConfig | None = None,
             warmup: WarmupConfig | None = None, ranks: int = 1, device: str | None = None, resume: bool = False,
             instruct_cache: str | Path | None = None) -> dict:
    """The book's experiment on a data dir's GSM8K; every launcher runs this one function.

        model_folder -> [instruction tuning] -> evaluate (_before) -> [SFT warm-up -> evaluate (_after_sft)]
                     -> GRPO (1 or N ranks) -> evaluate (_after)

    `model_folder`: a Hugging Face GPT-2 or Qwen2 folder (weights + tokenizer). `instruct` makes
    our stand-in for an Instruct model first (`lm.rl.warmup.instruction_tune`; cached in
    `instruct_cache` when given, so grpo and grpo_ddp tune once); `warmup` is the book's TRL SFT step.
    Launchers: one process (`ranks` = 1); `ranks` > 1 from a plain process, GRPO then runs in
    that many fresh processes (`distributed.spawn`); under torchrun (WORLD_SIZE > 1) every process
    calls this, rank 0 prepares and evaluates, every rank trains. Evaluation is greedy on held-out
    problems (`split_problems`): accuracy (the book's rule), format_rate, accuracy_any_format.
    The metrics are complete on rank 0.
    """
    evaluation = evaluation or EvalConfig()
    out = Path(out_dir)
    rank, world = distributed.environment()
    d = distributed.init(rank, world, device, timeout_s=3600) if world > 1 else None   # rank 0 prepares meanwhile
    main = d is None or d.is_main
    tok = tokenizer_from_dir(model_folder)
    metrics: dict = {"ranks": world if d is not None else ranks}
    if main:
        model, start_metrics, (train_problems, eval_set) = prepare_start(
            model_folder, tok, data_dir, out, cfg, evaluation, instruct, warmup, device, resume, instruct_cache)
        metrics.update(start_metrics)
    if d is not None:                                              # torchrun: this process is one rank
        distributed.barrier(d)
        model, trained = _train_rank(d, out / "start_model", model_folder, data_dir, cfg, evaluation, out, resume,
                                     train_problems if main else None)
        metrics.update(trained)
    elif ranks > 1:
        distributed.spawn(_rank_main, ranks, str(model_folder), str(data_dir), cfg, evaluation, str(out), device,
                          resume)
        model = load_causal_lm(out / "grpo_model", device=device or "cpu")
        metrics.update(json.loads((out / "grpo" / "grpo_metrics.json").read_text(encoding="utf-8")))
    else:
        metrics.update(train_grpo(model, tok, train_problems, cfg, out / "grpo", model.config.eos_token_id,
                                  resume=resume))
    if main:
        after, texts = evaluate(model, tok, eval_set, evaluation.max_new_tokens, model.config.eos_token_id)
        metrics.update({f"{k}_after": v for k, v in after.items()})
        metrics["what_changed"] = what_grpo_changed(metrics)
        metrics["samples"] = [{"question": p.question, "answer": p.answer, "completion": t}
                              for p, t in list(zip(eval_set, texts))[:3]]
    if d is not None:
        if d.is_main:
            model.save_pretrained(out / "grpo_model")
        distributed.shutdown(d)
    return metrics


def prepare_start(model_folder: str | Path, tok, data_dir: str | Path, out: Path, cfg: GRPOConfig,
                  evaluation: EvalConfig, instruct: InstructConfig | None, warmup: WarmupConfig | None,
                  device: str | None, resume: bool, instruct_cache: str | Path | None
                  ) -> tuple[torch.nn.Module, dict, tuple[list[Problem], list[Problem]]]:
    """The model GRPO starts from, saved to out/start_model, what was measured on the way, and the
    (training, held-out) problems that fit it."""
    start, saved = out / "start_model", out / START_METRICS
    prepared = resume and (start / "config.json").is_file() and saved.is_file()   # before the stop
    model = load_causal_lm(start if prepared else model_folder, device=device or "cpu")
    eos_id = model.config.eos_token_id
    train_problems, eval_set, skipped = problem_sets(data_dir, tok, model.config, cfg, evaluation)
    if prepared:
        return model, json.loads(saved.read_text(encoding="utf-8")), (train_problems, eval_set)
    metrics: dict = {"eval_problems": len(eval_set), "train_problems": len(train_problems),
                     "problems_too_long": skipped}
    if instruct is not None:
        cache = Path(instruct_cache) if instruct_cache is not None else None
        if cache is not None and (cache / "instruct.json").is_file():
            model = load_causal_lm(cache, device=device or "cpu")
            metrics.update(json.loads((cache / "instruct.json").read_text(encoding="utf-8")))
        else:
            tuned = instruction_tune(model, tok, train_problems, instruct, eos_id, out / "instruct", cfg.seed, device)
            metrics.update(tuned)
            if cache is not None:
                _save_model(model, cache, {"instruct.json": tuned})
    before, _ = evaluate(model, tok, eval_set, evaluation.max_new_tokens, eos_id)
    metrics.update({f"{k}_before": v for k, v in before.items()})
    if warmup is not None:
        metrics.update(sft_warmup(model, tok, train_problems, warmup, eos_id, out / "sft", cfg.seed, device))
        after_sft, _ = evaluate(model, tok, eval_set, evaluation.max_new_tokens, eos_id)
        metrics.update({f"{k}_after_sft": v for k, v in after_sft.items()})
    _save_model(model, start)
    atomic_write_json(saved, metrics)
    return model, metrics, (train_problems, eval_set)


def _save_model(model: torch.nn.Module, folder: Path, extra: dict | None = None) -> None:
    """save_pretrained into a fresh folder, renamed into place only when complete."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    for name, obj in (extra or {}).items():
        atomic_write_json(partial / name, obj)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def _train_rank(d: Dist, start: Path, tokenizer_folder: str | Path, data_dir: str | Path, cfg: GRPOConfig,
                evaluation: EvalConfig, out: Path, resume: bool,
                train_problems: list[Problem] | None = None) -> tuple[torch.nn.Module, dict]:
    """One rank's GRPO from the saved starting model (spawned workers and torchrun processes alike);
    `train_problems` when this process has them already (torchrun's rank 0)."""
    if d.device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // d.world))    # the ranks share the cores
    model, tok = load_causal_lm(start, device=d.device), tokenizer_from_dir(tokenizer_folder)
    if train_problems is None:
        train_problems, _, _ = problem_sets(data_dir, tok, model.config, cfg, evaluation)
    metrics = train_grpo(model, tok, train_problems, cfg, out / "grpo", model.config.eos_token_id, d, resume=resume,
                         desc=f"grpo rank {d.rank}")
    return model, metrics


def _rank_main(rank: int, world: int, tokenizer_folder: str, data_dir: str, cfg: GRPOConfig, evaluation: EvalConfig,
               out: str, device: str | None, resume: bool) -> None:
    """A worker started by `distributed.spawn`: one rank's GRPO; rank 0 saves the model and metrics."""
    d = distributed.init(rank, world, device)
    model, metrics = _train_rank(d, Path(out) / "start_model", tokenizer_folder, data_dir, cfg, evaluation, Path(out),
                                 resume)
    if d.is_main:
        model.save_pretrained(Path(out) / "grpo_model")
        atomic_write_json(Path(out) / "grpo" / "grpo_metrics.json", metrics)
    distributed.shutdown(d)


def what_grpo_changed(m: dict) -> str:
    """One sentence on what GRPO changed in a run, from its before/after metrics."""
    pct = lambda x: f"{100 * x:.1f} %"
    start = "after_sft" if "accuracy_after_sft" in m else "before"
    acc0, acc1 = m.get(f"accuracy_{start}"), m.get("accuracy_after")
    fmt0, fmt1 = m.get(f"format_rate_{start}"), m.get("format_rate_after")
    any0, any1 = m.get(f"accuracy_any_format_{start}"), m.get("accuracy_any_format_after")
    if None in (acc0, acc1, fmt0, fmt1, any0, any1):
        return ""
    gain, fmt_gain, solve_gain = acc1 - acc0, fmt1 - fmt0, any1 - any0
    if abs(gain) < 0.02:
        why = "accuracy did not move"
    elif gain < 0:
        why = "GRPO made the model worse by the book's rule"
    elif fmt_gain > solve_gain:
        why = "the gain is mostly the format: the model answers in the tags it rarely used"
    else:
        why = "the gain is mostly in solving: the model gets more answers right whatever the format"
    return (f"GRPO took accuracy (the book's rule) from {pct(acc0)} to {pct(acc1)}; tagged answers went from "
            f"{pct(fmt0)} to {pct(fmt1)} and answers right whatever the format from {pct(any0)} to {pct(any1)}, "
            f"so {why}.")


# --------------------------------------------------------------------------------------------
# The command line (python -m lm.rl.grpo, torchrun --nproc_per_node=N -m lm.rl.grpo)
# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """Flags for the files and the phases, then every field of GRPOConfig, EvalConfig (--eval-*),
    InstructConfig (--instruct-*) and WarmupConfig (--warmup-*), with their defaults and help (lm.cli)."""
    p = argparse.ArgumentParser(prog="python -m lm.rl.grpo",
                                description="GRPO on a data dir's GSM8K, with accuracy before and after, as the book's "
                                            "GRPO programs. Data parallel: torchrun --nproc_per_node=N -m lm.rl.grpo "
                                            "... or --ranks N.")
    p.add_argument("--model", required=True, help="a Hugging Face GPT-2 or Qwen2 folder (weights and tokenizer), "
                                                  "or a hub name to download when online")
    p.add_argument("--data-dir", required=True, help="a data dir with gsm8k/train.jsonl (and gsm8k/test.jsonl)")
    p.add_argument("--out", required=True, help="output folder (metrics.jsonl, checkpoints, models, summary.json)")
    p.add_argument("--instruct", action="store_true",
                   help="first instruction-tune the model on the training problems (our stand-in for an Instruct "
                        "model, lm.rl.warmup.instruction_tune); for a base model such as the run's small GPT-2")
    p.add_argument("--sft-warmup", action="store_true",
                   help="the book's TRL notebook: SFT on worked solutions in the tags before GRPO (accuracy_after_sft)")
    p.add_argument("--ranks", type=int, default=1, help="GRPO processes to start here (under torchrun: ignored)")
    p.add_argument("--resume", action="store_true", help="continue from OUT's starting model and GRPO checkpoint")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    add_dataclass_flags(p, GRPOConfig)
    add_dataclass_flags(p, EvalConfig, "eval_")
    add_dataclass_flags(p, InstructConfig, "instruct_")
    add_dataclass_flags(p, WarmupConfig, "warmup_")
    return p


def main(argv: list[str] | None = None) -> int:
    """One process, `--ranks N` processes, or one rank of `torchrun --nproc_per_node=N -m lm.rl.grpo ...`."""
    a = build_parser().parse_args(argv)
    try:
        cfg = dataclass_from_args(GRPOConfig, a)
        seed_everything(cfg.seed)
        metrics = run_grpo(model_folder_of(a.model), a.data_dir, a.out, cfg, dataclass_from_args(EvalConfig, a, "eval_"),
                           dataclass_from_args(InstructConfig, a, "instruct_") if a.instruct else None,
                           dataclass_from_args(WarmupConfig, a, "warmup_") if a.sft_warmup else None,
                           ranks=a.ranks, device=a.device, resume=a.resume)
    except LMError as e:
        print(f"lm.rl.grpo: error: {e}", file=sys.stderr)
        return 2
    if distributed.environment()[0] == 0:
        write_summary(a.out, metrics)
        print(f"accuracy {metrics['accuracy_before']:.3f} -> {metrics['accuracy_after']:.3f}; reward "
              f"{metrics['reward_first']:.3f} -> {metrics['reward_last']:.3f}\n{metrics['what_changed']}")
    return 0

