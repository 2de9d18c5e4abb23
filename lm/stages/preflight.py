"""run_all.py's pre-flight: everything a run needs, checked before the first stage starts.

A run that stops after a minute of training on something it could have seen at the start wastes
that minute, and one problem at a time wastes more. `preflight()` looks at every input before
anything is trained and returns one line per problem (run_all.py prints them all and exits 2):

- the data dir exists, and every file the selected stages read (their `DATA_FILES`, plus the
  small GPT-2's corpus when a stage `NEEDS_GPT2` and no `--model` is given) is there, readable,
  not empty, UTF-8 text, and for `.jsonl` starts with a JSON object. Only the first 64 KiB are
  read: the loaders still check every line when a stage reads the file;
- `--model` (its other name `--gpt2` is the same flag): `check_model_folder`, the same checks
  `from_pretrained` makes, without reading the weights: config.json, the weight files' headers
  (every name and shape against the config), the tokenizer files, and that the tokenizer's ids
  fit the model's vocabulary. Its family must suit every selected stage: a stage that `NEEDS_GPT2`
  without `USES_MODEL` builds GPT-2 and takes a GPT-2 folder only. A hub name (`--model gpt2`,
  `--model Qwen/Qwen2.5-0.5B-Instruct`) is fetched into the cache first; offline, the advice is to
  give a folder;
- `--out`: not an existing file, and creatable (its first existing parent is a writable folder);
- `--threads` is at least 1, `--device` is one torch knows and this machine has.

Nothing is written (a hub download aside). On local folders it takes well under a second; the
slowest part is reading a real GPT-2 tokenizer (about 0.4 s).

The model families are the table `lm.models.auto.FAMILIES` (`MODEL_FAMILIES` here): a row's
language model class gives `read_config(folder)` and `state_from(tensors, path, config)`, its
tokenizer loader `folder -> tokenizer` (with `vocab_size`); one row per `model_type` of
config.json lets `check_model_folder` take its folders.
"""
from __future__ import annotations

import codecs
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from lm.checkpoints.hf import TOKENIZER_FILES, check_tokenizer_fits, load_folder, read_config
from lm.data.download import GPT2_NAMES, MODEL_FILES, model_folder
from lm.data.loaders import resolve_data_dir
from lm.errors import LMError
from lm.finetune.base_model import family_name
from lm.models.auto import FAMILIES, ModelFamily
from lm.models.gpt2 import GPT2
from lm.stages import data_files, load_stage, needs_gpt2, uses_model
from lm.tokenizers.gpt2 import FILE_NAMES
from lm.utils import choose_device

HEAD_BYTES = 64 * 1024   # how much of each data file the pre-flight reads


# config.json's model_type -> how to check (and load) such a folder: the one table of families
MODEL_FAMILIES: dict[str, ModelFamily] = FAMILIES
GPT2_ONLY = (family_name(GPT2),)   # the families a stage that builds GPT-2 takes


# --------------------------------------------------------------------------------------------
# Data files
# --------------------------------------------------------------------------------------------

def check_data_file(path: Path) -> str | None:
    """What is wrong with a data file (looking at its first 64 KiB), or None."""
    if not path.exists():
        return "missing"
    if not path.is_file():
        return "not a file"
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        return f"cannot read: {e.strerror or e}"
    if size == 0:
        return "empty file"
    if head[:2] == b"\x1f\x8b":
        return "gzip-compressed; decompress it first (gunzip)"
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=size <= HEAD_BYTES)
    except UnicodeDecodeError as e:
        return f"not UTF-8 text (byte {head[e.start]:#04x} at offset {e.start})"
    if size <= HEAD_BYTES and not text.strip():
        return "no text (only whitespace)"
    if path.suffix == ".jsonl":
        lines = text.split("\n")
        complete = lines if size <= HEAD_BYTES else lines[:-1]
        for n, line in enumerate(complete, start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as e:
                    return f"line {n} is not JSON ({e})"
                if not isinstance(row, dict):
                    return f"line {n} is a JSON {type(row).__name__}, not an object"
                break
    return None


def needed_files(modules: dict[str, ModuleType], model_given: bool) -> dict[str, list[str]]:
    """Data file (relative to the data dir) -> the selected stages that need it, in stage order.

    A stage that `NEEDS_GPT2` without `--model` needs the small GPT-2's corpus (`gpt2_pretrain`'s
    files); with it, it starts from that folder.
    """
    need: dict[str, list[str]] = {}
    pretrain = load_stage("gpt2_pretrain")
    for name, module in modules.items():
        files = data_files(module)
        if needs_gpt2(module) and not model_given and pretrain is not None and name != "gpt2_pretrain":
            files += data_files(pretrain)
        for rel in files:
            need.setdefault(rel, [])
            if name not in need[rel]:
                need[rel].append(name)
    return need


def check_data(data_dir: Path, need: dict[str, list[str]]) -> list[str]:
    """One line per bad file: `data: PATH: PROBLEM (needed by STAGES)`."""
    problems = []
    for rel, stages in need.items():
        problem = check_data_file(data_dir / rel)
        if problem:
            problems.append(f"data: {data_dir / rel}: {problem} (needed by {', '.join(stages)})")
    return problems


# --------------------------------------------------------------------------------------------
# Model folders
# --------------------------------------------------------------------------------------------

def check_model_folder(folder: str | os.PathLike, flag: str = "--model", families: tuple[str, ...] | None = GPT2_ONLY,
                       need_tokenizer: bool = True, why: str = "") -> list[str]:
    """Everything wrong with a Hugging Face model folder, one line each, without loading the weights.

    config.json (its `model_type` picks the family in MODEL_FAMILIES; `families` limits which are
    accepted, None: any, and `why` says why in the line that refuses one; a config without
    model_type is read as the first of `families`), the weight files' headers against the config,
    the tokenizer files (`need_tokenizer`: they must be there), and the tokenizer's ids against the
    config's `vocab_size`.

    >>> check_model_folder("../shared/fixtures/gpt2_lm_safetensors", need_tokenizer=False)  # doctest: +SKIP
    []
    """
    folder = Path(folder).expanduser()
    where = f"{flag} {folder}"
    if not folder.is_dir():
        return [f"{where}: {'not a folder' if folder.exists() else 'no such folder'}"]
    problems: list[str] = []
    default = families[0] if families else None
    family, config = None, None
    try:
        model_type = read_config(folder / "config.json").get("model_type") or default
        if model_type not in MODEL_FAMILIES or (families is not None and model_type not in families):
            known = families if families is not None else tuple(MODEL_FAMILIES)
            problems.append(f"{where}: config.json: model_type {model_type!r} is not supported here "
                            f"(known: {', '.join(map(str, known))}){why}")
        else:
            family = MODEL_FAMILIES[model_type]
            config = family.causal_lm.read_config(folder)
    except LMError as e:
        problems.append(f"{flag}: {e}")
        family = family or MODEL_FAMILIES.get(default)       # still check the tokenizer files
    try:
        tensors, path = load_folder(folder, meta=True)       # headers only: names, shapes, dtypes
        if config is not None:
            family.causal_lm.state_from(tensors, path, config)
    except LMError as e:
        problems.append(f"{flag}: {e}")
    has_tokenizer = any((folder / name).is_file() for pair in FILE_NAMES for name in pair) or \
        any((folder / name).is_file() for name in TOKENIZER_FILES)
    if family is not None and (need_tokenizer or has_tokenizer):
        try:
            family.tokenizer(folder)
            if config is not None:
                check_tokenizer_fits(folder, config.vocab_size)
        except LMError as e:
            problems.append(f"{flag}: {e}")
    return problems


def resolve_model(value: str, fetch: bool) -> tuple[Path | None, list[str]]:
    """What `--model VALUE` (or `--gpt2 VALUE`) names: (a folder, []) or (None, [problem]).

    A folder is taken as is; a hub name (Qwen/Qwen2.5-0.5B-Instruct, gpt2, ...) is fetched into the
    cache when `fetch` (a selected stage uses the base model), else left alone.
    """
    path = Path(value).expanduser()
    if path.is_dir():
        return path, []
    if path.exists():
        return None, [f"--model {value}: a file, not a folder (give a Hugging Face model folder)"]
    if value in MODEL_FILES or value in GPT2_NAMES:
        if not fetch:
            return None, []
        try:
            return model_folder(value), []
        except LMError as e:
            return None, [f"--model {value}: {e}"]
    return None, [f"--model {value}: no such folder, and not a hub name ({', '.join([*MODEL_FILES, *GPT2_NAMES])})"]


# --------------------------------------------------------------------------------------------
# The out folder, the flags, and everything together
# --------------------------------------------------------------------------------------------

def check_out(out: str | os.PathLike) -> list[str]:
    """`--out` must be a folder or creatable as one (without creating it here)."""
    out = Path(out).expanduser()
    if out.exists():
        if not out.is_dir():
            return [f"--out {out}: an existing file, not a folder (give a folder, or a name that does not exist)"]
        parent = out
    else:
        parent = out.parent
        while not parent.exists() and parent.parent != parent:
            parent = parent.parent
        if not parent.is_dir():
            return [f"--out {out}: {parent} is a file, so the folder cannot be made"]
    if not os.access(parent, os.W_OK | os.X_OK):
        return [f"--out {out}: cannot write in {parent} (permission denied)"]
    return []


@dataclass
class Preflight:
    problems: list[str] = field(default_factory=list)   # one line each; empty: go
    data_dir: Path | None = None                          # the resolved data dir
    model: str | None = None                              # the --model folder (a hub name resolved to the cache)


def preflight(modules: dict[str, ModuleType], data_dir: str | os.PathLike | None, out: str | os.PathLike,
              model: str | None = None, threads: int | None = None, device: str | None = None,
              gpt2: str | None = None) -> Preflight:
    """Check a run before it starts. `modules`: the selected stages' modules (implemented ones).
    `gpt2`: another name for `model`, as on the command line."""
    res = Preflight()
    if gpt2 is not None and model is not None and gpt2 != model:
        res.problems.append(f"--gpt2 {gpt2} and --model {model}: --gpt2 is another name for --model; give one folder")
    model = model or gpt2
    if threads is not None and threads < 1:
        res.problems.append(f"--threads {threads}: must be at least 1")
    try:
        choose_device(device)
    except LMError as e:
        res.problems.append(str(e))
    res.problems += check_out(out)
    if model:
        res.model, problems = check_model(model, modules)
        res.problems += problems
    try:
        res.data_dir = resolve_data_dir(data_dir)
    except LMError as e:
        res.problems.append(f"data: {e}")
    if res.data_dir is not None:
        res.problems += check_data(res.data_dir, needed_files(modules, model_given=bool(model)))
    return res


def check_model(value: str, modules: dict[str, ModuleType]) -> tuple[str | None, list[str]]:
    """`--model VALUE` for the selected stages: (the folder, a hub name fetched, or None; problems).
    Any family we implement, unless a stage that builds GPT-2 is among them (`NEEDS_GPT2` without
    `USES_MODEL`): then a GPT-2 folder only."""
    folder, problems = resolve_model(value, fetch=any(needs_gpt2(m) for m in modules.values()))
    if folder is None:
        return None, problems
    gpt2_only = [name for name, m in modules.items() if needs_gpt2(m) and not uses_model(m)]
    why = f"; {', '.join(gpt2_only)} build{'s' if len(gpt2_only) == 1 else ''} GPT-2" if gpt2_only else ""
    families = GPT2_ONLY if gpt2_only else None
    return str(folder), problems + check_model_folder(folder, "--model", families, need_tokenizer=True, why=why)
