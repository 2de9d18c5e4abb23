"""The folder fuzz (tests/checkpoints/test_fuzz_folders.py): corrupted copies of the reference fixtures, each
loaded and used in its own forked process with a timeout.

    python tests/fuzz_folders.py SHARED_FIXTURES WORK_DIR N_PER_TARGET SEED   -> JSON on stdout

Targets (a fixture folder and the files we corrupt):
    qwen2             ../shared/fixtures/qwen2_lm_{tied,untied}: config.json, model.safetensors,
                      tokenizer.json, tokenizer_config.json
    tokenizer_json    qwen2_tokenizer's tokenizer.json (+ tokenizer_config.json beside it)
    vocab_merges      qwen2_tokenizer's vocab.json, merges.txt (+ tokenizer_config.json)
    tokenizer_config  tokenizer_config.json beside either of the two above
    adapter           gpt2_lora_peft: adapter_config.json, adapter_model.safetensors (on gpt2_lm_safetensors)
    classifier        gpt2_classifier_safetensors: config.json, model.safetensors

Corruptions: wrong JSON types, deleted and extra keys, huge and odd numbers, cut or changed
strings, shortened lists; truncation and random bytes anywhere; in safetensors headers the length
prefix, dtypes, shapes, offsets and names; merges.txt lines dropped, swapped, added, split.

Verdict of each case: "error" (an LMError that is a FileFormatError naming a file of the case's
folder), "loaded" (loaded, then used without any exception: a forward pass with finite logits,
encode + decode that gives the text back, the chat template's default system message; only when
the corruption is in the tensors' bytes may the logits overflow: a weight of 1e22 is a valid
number, and the format has no checksum), or a
failure: "raw" (any other exception), "bad-use" (loaded, then failed or gave NaN on first use),
"changed" (an extra key that means nothing changed the result), "hang" (over the timeout),
"crash" (the process died). The worker imports torch once and forks per case: cheap enough to run
a hundred cases in a few seconds.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import select
import shutil
import signal
import struct
import sys
import time
import traceback
import unicodedata
from pathlib import Path

import torch

torch.set_num_threads(1)       # before anything runs: forked children never inherit an OpenMP pool

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lm.errors import FileFormatError, LMError  # noqa: E402
from lm.finetune.classifier import ClassificationExamples, labels_of  # noqa: E402
from lm.finetune.lora import load_adapter  # noqa: E402
from lm.models.auto import CLASSIFIER, load_causal_lm, model_type  # noqa: E402
from lm.models.gpt2 import GPT2  # noqa: E402
from lm.tokenizers.chat import IM_END, IM_START, default_system_from_dir, encode_chat  # noqa: E402
from lm.tokenizers.hf_json import tokenizer_from_dir  # noqa: E402

TIMEOUT_S = 20.0
TEXTS = ["Natalia sold 48 clips in April, and then she sold half as many clips in May.",
         "i feel so happy today!! 12345 ² ½ 五百", "e\u0301 caf\u00e9 \u212b <|im_start|>user\nhi<|im_end|>\n",
         "  spaces\t\ttabs\n\n\nnewlines  ", ""]
MESSAGES = [{"role": "user", "content": "What is 2+2?"}]
WRONG = [None, True, False, 0, -1, 1.5, "x", "0", "", [], [1], ["x"], {}, {"a": 1}, 2**31, 10**12, 2**63,
         1e300, -1e300, math.inf, math.nan, "\u00b2", "full_attention"]
NUMBERS = [0, -1, 1, 2, 2**31, 10**12, 2**63, 10**30, 1e300, math.inf, -math.inf, math.nan, 0.5, -0.0]


# --------------------------------------------------------------------------------------------
# Corruptions
# --------------------------------------------------------------------------------------------

def _pick_container(rng: random.Random, root):
    """(container, key) of a random spot, biased to the top levels: at each container, stop with
    probability 1/2, else descend into a random child container."""
    node = root
    while True:
        if isinstance(node, dict) and node:
            k = rng.choice(list(node))
        elif isinstance(node, list) and node:
            k = rng.randrange(len(node))
        else:
            return None
        child = node[k]
        if isinstance(child, (dict, list)) and child and rng.random() < 0.6:
            node = child
            continue
        return node, k


def mutate_json(rng: random.Random, data: object) -> tuple[object, str, bool]:
    """(new data, what was done, meaning-preserving?) for one structural corruption."""
    data = copy.deepcopy(data)
    spot = _pick_container(rng, data)
    if spot is None:
        return WRONG[rng.randrange(len(WRONG))], "whole file replaced", False
    node, k = spot
    old = node[k]
    kind = rng.choice(["type", "type", "delete", "extra", "number", "string", "list"])
    if kind == "delete":
        del node[k]
        return data, f"deleted {k!r}", False
    if kind == "extra":
        target = node if isinstance(node, dict) else (old if isinstance(old, dict) else None)
        if target is not None:
            target["zz_extra_key"] = rng.choice([1, "x", None, [], {"a": 1}])
            return data, f"extra key beside {k!r}", True
        kind = "type"
    if kind == "number" and isinstance(old, (int, float)) and not isinstance(old, bool):
        new = rng.choice(NUMBERS + [old + 1, old - 1, old * 2])
        node[k] = new
        return data, f"{k!r}: {old!r} -> {new!r}", False
    if kind == "string" and isinstance(old, str):
        choice = rng.randrange(5)
        if choice == 0 and old:
            new = old[:rng.randrange(len(old))]                       # cut
        elif choice == 1:
            new = old + rng.choice(["x", "\u014b", "\u0100", "<", " ", "\\"])
        elif choice == 2 and old:
            i = rng.randrange(len(old))
            new = old[:i] + rng.choice(["\u014b", "'", "{", "}", "%", "0"]) + old[i + 1:]
        elif choice == 3:
            new = ""
        else:
            new = old.upper()
        node[k] = new
        return data, f"{k!r}: string {old[:30]!r} -> {new[:30]!r}", False
    if kind == "list" and isinstance(old, list) and old:
        choice = rng.randrange(3)
        if choice == 0:
            node[k] = old[:rng.randrange(len(old))]
        elif choice == 1:
            node[k] = old[:-1]
        else:
            node[k] = old + [old[rng.randrange(len(old))]]
        return data, f"{k!r}: list changed ({choice})", False
    new = WRONG[rng.randrange(len(WRONG))]
    node[k] = new
    return data, f"{k!r}: {str(old)[:30]!r} -> {new!r}", False


def mutate_bytes(rng: random.Random, raw: bytes, start: int = 0, end: int | None = None) -> tuple[bytes, str]:
    """Truncation, or 1-3 bytes of raw[start:end] replaced (any value, or a JSON-looking character)."""
    if (rng.random() < 0.4 and start == 0) or not raw:
        n = rng.randrange(len(raw) + 1)
        return raw[:n], f"truncated to {n} of {len(raw)} bytes"
    data = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(start, len(data) if end is None else end)
        data[i] = rng.randrange(256) if rng.random() < 0.5 else ord(rng.choice('0123456789[]{},:"-. eE\\'))
    return bytes(data), "bytes replaced" if start == 0 else "tensor bytes replaced"


def mutate_safetensors(rng: random.Random, raw: bytes) -> tuple[bytes, str]:
    """A corruption of the length prefix, of the header's fields, or of the bytes."""
    n = struct.unpack("<Q", raw[:8])[0]
    header, data = json.loads(raw[8:8 + n]), raw[8 + n:]
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    info = header[name]
    kind = rng.choice(["prefix", "dtype", "shape", "offset", "rename", "drop", "json", "bytes", "data"])
    what = kind
    if kind == "prefix":
        out = bytearray(raw)
        out[rng.randrange(8)] = rng.randrange(256)
        return bytes(out), "length prefix"
    if kind == "bytes":                                       # the length prefix and the header's bytes
        return mutate_bytes(rng, raw, end=8 + n)
    if kind == "data":                                        # the tensors' bytes (no checksum guards them)
        return mutate_bytes(rng, raw, start=8 + n)
    if kind == "dtype":
        info["dtype"] = rng.choice(["F16", "BF16", "F64", "I64", "I8", "U8", "BOOL", "f32", 1, None])
        what = f"{name}: dtype {info['dtype']}"
    elif kind == "shape":
        shape = list(info["shape"])
        choice = rng.randrange(5)
        if choice == 0 and len(shape) == 2:
            shape = shape[::-1]
        elif choice == 1 and shape:
            shape[0] *= 2
        elif choice == 2:
            shape = shape + [1]
        elif choice == 3 and shape and shape[0] % 2 == 0 and len(shape) == 2:
            shape = [shape[0] // 2, shape[1] * 2]                  # same bytes, other shape
        else:
            shape = rng.choice([[], [-1], [2**62, 2**62], "x", [1.5]])
        info["shape"] = shape
        what = f"{name}: shape {shape}"
    elif kind == "offset":
        begin, end = info["data_offsets"]
        info["data_offsets"] = rng.choice([[begin + 4, end + 4], [begin, end - 4], [begin - 4, end], [end, begin],
                                           [0, end - begin], [begin, 2**63], "x"])
        what = f"{name}: data_offsets {info['data_offsets']}"
    elif kind == "rename":
        new = rng.choice([name.replace("model.", "", 1), name + "x", "model." + name, name.replace(".weight", ".bias"),
                          name.replace("layers.1", "layers.7"), name.replace("h.1", "h.7")])
        if new in header:                                         # both key layouts, or a clash
            header[new + ".dup"] = info
        else:
            header[new] = header.pop(name)
        what = f"rename {name} -> {new}"
    elif kind == "drop":
        del header[name]
        what = f"drop {name}"
    else:
        mutated, what, _ = mutate_json(rng, header)
        header = mutated
    blob = json.dumps(header, allow_nan=True).encode()
    return struct.pack("<Q", len(blob)) + blob + data, what


def mutate_merges(rng: random.Random, text: str) -> tuple[str, str]:
    lines = text.split("\n")
    body = list(range(1, len(lines)))
    i, j = rng.choice(body), rng.choice(body)
    kind = rng.randrange(6)
    if kind == 0:
        del lines[i]
    elif kind == 1:
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == 2:
        lines.insert(i, rng.choice(["a b c", "Ġ", "x  y", "Ġ zzz", "\u014b a", "#version: 0.2"]))
    elif kind == 3:
        lines[i] = lines[i].replace(" ", "", 1)
    elif kind == 4:
        lines = lines[:i]
    else:
        lines.insert(i, lines[j])                                 # a merge given twice
    return "\n".join(lines), f"merges.txt change {kind} at line {i + 1}"


def corrupt(rng: random.Random, src: Path, dst: Path) -> tuple[str, bool]:
    """Write a corrupted copy of `src` at `dst`; return (what was done, meaning-preserving?)."""
    raw = src.read_bytes()
    if src.suffix == ".safetensors":
        data, what = mutate_safetensors(rng, raw)
        dst.write_bytes(data)
        return what, False
    if src.name == "merges.txt":
        if rng.random() < 0.3:
            data, what = mutate_bytes(rng, raw)
            dst.write_bytes(data)
            return what, False
        text, what = mutate_merges(rng, raw.decode("utf-8"))
        dst.write_text(text, encoding="utf-8")
        return what, False
    if rng.random() < 0.25:
        data, what = mutate_bytes(rng, raw)
        dst.write_bytes(data)
        return what, False
    mutated, what, same = mutate_json(rng, json.loads(raw))
    dst.write_text(json.dumps(mutated, allow_nan=True, ensure_ascii=rng.random() < 0.5), encoding="utf-8")
    return what, same


# --------------------------------------------------------------------------------------------
# Targets: which folder, which files, and what "use" means
# --------------------------------------------------------------------------------------------

class FirstUseFailed(Exception):
    """Loaded, then failed on first use."""

    def __init__(self, e: BaseException):
        super().__init__(f"{type(e).__name__}: {e}")
        self.where = traceback.format_exc(limit=-3)[-900:]


class first_use:
    """`with first_use():` around the use of what was loaded: any exception is a FirstUseFailed."""

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if e is not None and not isinstance(e, FirstUseFailed):
            raise FirstUseFailed(e) from e
        return False


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.detach().float().contiguous().numpy().tobytes() if isinstance(p, torch.Tensor) else repr(p).encode())
    return h.hexdigest()


class NonFinite(FloatingPointError):
    """Logits with a NaN or an infinity."""


def _finite(logits: torch.Tensor, what: str) -> torch.Tensor:
    if not bool(torch.isfinite(logits).all()):
        raise NonFinite(f"{what}: logits are not finite")
    return logits


def use_tokenizer(folder: Path) -> list:
    """Load the tokenizer and the chat template's default system message; encode + decode (the
    text must come back) and encode a chat."""
    tok = tokenizer_from_dir(folder)
    system = default_system_from_dir(folder)
    with first_use():
        out = []
        for text in TEXTS:
            ids = tok.encode(text, allowed_special="all")
            back = tok.decode(ids)
            if back not in (text, unicodedata.normalize("NFC", text)):
                raise AssertionError(f"decode(encode({text!r})) gave {back!r}")
            out.append(ids)
        if IM_START in tok.special_tokens and IM_END in tok.special_tokens:
            out.append(encode_chat(tok, MESSAGES, add_generation_prompt=True, default_system=system))
        return [out, system, tok.pretokenizer, tok.normalizer, sorted(tok.special_tokens.items())]


IDS = torch.tensor([[50, 71, 317, 333, 549, 258, 84, 285, 307, 81], [751, 82, 749, 198, 56, 290, 385, 257, 752, 198]])


def use_qwen2(folder: Path) -> str:
    model = load_causal_lm(folder)
    text = use_tokenizer(folder)
    with first_use(), torch.no_grad():
        logits = _finite(model(IDS % model.config.vocab_size), "forward")
        return _digest(logits, text)


class _Ids:
    """A stand-in tokenizer for ClassificationExamples: fixed ids per text."""

    def encode(self, text: str) -> list[int]:
        return [5, 17, 300, 2, 99][:len(text)]


def use_classifier(folder: Path) -> str:
    model = CLASSIFIER[model_type(folder)].from_pretrained(folder)
    with first_use(), torch.no_grad():
        V = model.config.vocab_size
        labels = labels_of(model.config)
        if len(labels) != model.config.num_labels or not all(isinstance(x, str) and x for x in labels):
            raise AssertionError(f"labels_of gave {labels!r}")
        ex = ClassificationExamples(["a", "abcde", "abc"], [labels[0], labels[-1], labels[0]], _Ids(), model.config)
        batch = ex.collate([0, 1, 2])
        plain = _finite(model(IDS[:, :8] % V), "forward")
        padded = _finite(model(batch["input_ids"], attention_mask=batch["attention_mask"]), "padded forward")
    return _digest(plain, padded, labels)


BASE = {}


def use_adapter(folder: Path) -> str:
    model = BASE["model"]                   # this process's own copy (forked)
    load_adapter(model, folder)
    with first_use(), torch.no_grad():
        logits = _finite(model(IDS[:, :8] % model.config.vocab_size), "forward")
    return _digest(logits)


def targets(fixtures: Path) -> dict[str, list[tuple[Path, list[str], object]]]:
    """name -> [(source folder, files to corrupt, use)]; each case picks one folder and one file."""
    tok = fixtures / "qwen2_tokenizer"
    return {
        "qwen2": [(fixtures / f, ["config.json", "config.json", "model.safetensors", "tokenizer.json",
                                  "tokenizer_config.json"], use_qwen2) for f in ("qwen2_lm_tied", "qwen2_lm_untied")],
        "tokenizer_json": [(tok, ["tokenizer.json"], use_tokenizer)],
        "vocab_merges": [(tok, ["vocab.json", "merges.txt"], use_tokenizer)],
        "tokenizer_config": [(tok, ["tokenizer_config.json"], use_tokenizer)],
        "adapter": [(fixtures / "gpt2_lora_peft", ["adapter_config.json", "adapter_config.json",
                                                   "adapter_model.safetensors"], use_adapter)],
        "classifier": [(fixtures / "gpt2_classifier_safetensors", ["config.json", "config.json",
                                                                    "model.safetensors"], use_classifier)],
    }


# which files each target's folder holds (the others of the fixture folder are left out)
FOLDER_FILES = {
    "qwen2": ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"],
    "tokenizer_json": ["tokenizer.json", "tokenizer_config.json"],
    "vocab_merges": ["vocab.json", "merges.txt", "tokenizer_config.json"],
    "tokenizer_config": ["tokenizer_config.json", "vocab.json", "merges.txt"],
    "adapter": ["adapter_config.json", "adapter_model.safetensors"],
    "classifier": ["config.json", "model.safetensors"],
}


# --------------------------------------------------------------------------------------------
# Running one case in a forked child
# --------------------------------------------------------------------------------------------

def run_forked(use, folder: Path, timeout: float) -> dict:
    """Run use(folder) in a forked child; its verdict as a dict (see the module docstring)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                           # the child
        os.close(r)
        try:
            try:
                out = {"outcome": "loaded", "signature": use(folder)}
            except FirstUseFailed as e:
                out = {"outcome": "bad-use", "message": str(e)[:300], "where": e.where,
                       "nonfinite": isinstance(e.__cause__, NonFinite)}
            except LMError as e:
                named = isinstance(e, FileFormatError) and Path(os.path.abspath(e.path)).is_relative_to(folder.absolute())
                out = {"outcome": "error" if named else "unnamed", "type": type(e).__name__, "message": str(e)[:300]}
            except Exception as e:                         # noqa: BLE001 - the fuzz records every escape
                out = {"outcome": "raw", "type": type(e).__name__, "message": str(e)[:300],
                       "where": traceback.format_exc(limit=-3)[-900:]}
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks, deadline = [], time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([r], [], [], max(left, 0))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            return {"outcome": "hang"}
        chunk = os.read(r, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return {"outcome": "crash", "status": status}


def main(fixtures: Path, work: Path, per_target: int, seed: int) -> list[dict]:
    """Every target: the untouched folders first, in this process (their results are the
    references, and the first run pays one-time costs, such as building the Unicode classes of
    Qwen2's pre-tokenizer, before the children are forked), then `per_target` corrupted copies,
    each in a forked child."""
    rng = random.Random(seed)
    BASE["model"] = GPT2.from_pretrained(fixtures / "gpt2_lm_safetensors")
    results = []
    for name, choices in targets(fixtures).items():
        reference = {}
        for src, _, use in choices:
            case = work / f"{name}-reference-{src.name}"
            _populate(case, src, name)
            reference[src] = run_forked(use, case, TIMEOUT_S) if name == "adapter" else \
                {"outcome": "loaded", "signature": json.loads(json.dumps(use(case)))}   # as a child sends it
            results.append({**reference[src], "target": name, "case": case.name, "mutation": "none (reference)",
                            "source": src.name, "reference": True})
            shutil.rmtree(case)
        for n in range(per_target):
            src, files, use = choices[n % len(choices)]
            case = work / f"{name}-{n:04d}"
            _populate(case, src, name)
            file = rng.choice(files)
            (case / file).unlink()
            what, same = corrupt(rng, src / file, case / file)
            result = run_forked(use, case, TIMEOUT_S)
            result.update(target=name, case=case.name, mutation=f"{file}: {what}", source=src.name)
            if result["outcome"] == "loaded" and same and result.get("signature") != reference[src].get("signature"):
                result["outcome"] = "changed"
            if result["outcome"] == "bad-use" and result["nonfinite"] and what == "tensor bytes replaced":
                result["outcome"] = "loaded"          # a finite but huge weight: the format cannot tell (README)
            results.append(result)
            if result["outcome"] in ("error", "loaded"):
                shutil.rmtree(case)                            # failures stay, to be looked at
    return results


def _populate(case: Path, src: Path, target: str) -> None:
    """A case folder: links to the files the target's folder holds."""
    case.mkdir(parents=True)
    for f in FOLDER_FILES[target]:
        if (src / f).is_file():
            os.symlink(src / f, case / f)


if __name__ == "__main__":
    fixtures, work, per_target, seed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    t0 = time.perf_counter()
    out = main(fixtures, work, per_target, seed)
    print(json.dumps({"results": out, "seconds": time.perf_counter() - t0}))
