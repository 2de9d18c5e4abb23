"""Reading and writing model checkpoints without `transformers` or the `safetensors` package.

The safetensors format (what `save_pretrained` writes as `model.safetensors`) is simple:

    [8 bytes]  N, the header length, unsigned little-endian
    [N bytes]  a JSON object:  {"name": {"dtype": "F32", "shape": [32, 96], "data_offsets": [0, 12288]},
                                ..., "__metadata__": {"format": "pt"}}    (padded with spaces)
    [rest]     the data region: every tensor's bytes, little-endian, row-major; `data_offsets`
               are [begin, end) relative to the start of the data region.

We check everything the header claims before touching the data: the length fits in the file, the
JSON is an object with no duplicate names, each dtype is one we know (F32, F16, BF16 -- anything
else is refused by name), shapes are lists of non-negative integers, each byte range is
product(shape) x item size long, and the ranges tile the data region exactly (no holes, no
overlaps, nothing past the end). Tensors are then memory-mapped, not read: loading a 500 MB
checkpoint costs page-table entries, and bytes are read from disk only when used.

What the format cannot tell us: tensor bytes carry no checksum, so a flipped bit *inside the data*
loads silently as a slightly different number. Only the length prefix and header can be verified.

Hugging Face folders (sharded checkpoints, `pytorch_model.bin`, config.json, key layouts) are in
`lm/checkpoints/hf.py`; this module is the file format alone.
"""
from __future__ import annotations

import json
import math
import mmap
import os
import struct
import sys
from pathlib import Path

import torch

from lm.errors import CheckpointError
from lm.utils import atomic_open, no_duplicate_keys

# safetensors dtype name -> (torch dtype, bytes per element). Anything else is refused by name.
DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
}
TORCH_TO_NAME = {dt: name for name, (dt, _) in DTYPES.items()}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the reference implementation's limit too



if sys.byteorder != "little":  # pragma: no cover - every platform torch ships for is little-endian
    raise ImportError("lm.checkpoints.safetensors assumes a little-endian machine (safetensors data is little-endian)")


# --------------------------------------------------------------------------------------------
# safetensors: the header
# --------------------------------------------------------------------------------------------

def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def parse_header(path: str | os.PathLike, prefix: bytes, file_size: int) -> tuple[dict, dict, int]:
    """Validate a safetensors header.

    `prefix` must hold at least the first 8 + N bytes of the file (N = the declared header length).
    Returns (entries, metadata, data_start): entries maps name -> {"dtype", "shape", "data_offsets"},
    metadata is the `__metadata__` dict of strings (or {}), data_start the file offset of the data.
    Raises CheckpointError naming the file and the first problem found.
    """
    if file_size < 8:
        raise CheckpointError(path, f"file is {file_size} bytes, too short for the 8-byte header length")
    (n,) = struct.unpack("<Q", prefix[:8])
    if n > file_size - 8:
        raise CheckpointError(path, f"header length {n} is longer than the rest of the file ({file_size - 8} bytes)"
                                    " (truncated or not a safetensors file)")
    if n > MAX_HEADER_BYTES:
        raise CheckpointError(path, f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit")
    if n < 2:
        raise CheckpointError(path, f"header length {n} is too short for a JSON object")
    try:
        header = json.loads(prefix[8:8 + n].decode("utf-8"), object_pairs_hook=no_duplicate_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(path, f"header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, f"header is a JSON {type(header).__name__}, not an object")

    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise CheckpointError(path, "__metadata__ must be an object of string -> string")

    data_size = file_size - 8 - n
    spans = []
    for name, info in header.items():
        where = f"tensor {name!r}"
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            got = sorted(info) if isinstance(info, dict) else type(info).__name__
            raise CheckpointError(path, f"{where}: expected exactly the fields dtype, shape, data_offsets; got {got}")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise CheckpointError(path, f"{where}: dtype {dtype!r} is not supported (only {', '.join(DTYPES)})")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise CheckpointError(path, f"{where}: shape {shape!r} is not a list of non-negative integers")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise CheckpointError(path, f"{where}: data_offsets {offsets!r} is not [begin, end] with 0 <= begin <= end")
        begin, end = offsets
        if end > data_size:
            raise CheckpointError(path, f"{where}: data_offsets [{begin}, {end}] run past the end of the data "
                                        f"region ({data_size} bytes; file truncated?)")
        expected = math.prod(shape) * DTYPES[dtype][1]
        if end - begin != expected:
            raise CheckpointError(path, f"{where}: {end - begin} bytes for shape {shape} of {dtype} "
                                        f"(expected {expected})")
        spans.append((begin, end, name))

    # The tensors must tile the data region: sorted by offset, each starts where the last ended.
    pos, prev = 0, None
    for begin, end, name in sorted(spans):
        if begin < pos:
            raise CheckpointError(path, f"tensor {name!r} at [{begin}, {end}] overlaps tensor {prev!r}")
        if begin > pos:
            raise CheckpointError(path, f"hole of {begin - pos} bytes in the data region before tensor {name!r}")
        pos, prev = end, name
    if pos != data_size:
        raise CheckpointError(path, f"data region is {data_size} bytes but the tensors cover {pos} "
                                    "(extra bytes at the end)")
    return header, metadata, 8 + n


def read_safetensors_header(path: str | os.PathLike) -> tuple[dict, dict, int]:
    """(entries, metadata, data_start) of a safetensors file, validated; see `parse_header`."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            first = f.read(8)
            n = struct.unpack("<Q", first)[0] if len(first) == 8 else 0
            prefix = first + (f.read(n) if 0 < n <= min(size - 8, MAX_HEADER_BYTES) else b"")
    except OSError as e:
        raise CheckpointError(path, f"cannot read: {e.strerror or e}") from None
    return parse_header(path, prefix, size)


# --------------------------------------------------------------------------------------------
# safetensors: loading (memory-mapped) and saving
# --------------------------------------------------------------------------------------------

def load_safetensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load every tensor of a safetensors file, memory-mapped (copy-on-write; the file is never changed).

    >>> tensors = load_safetensors("model.safetensors")   # doctest: +SKIP
    >>> tensors["transformer.wte.weight"].shape            # doctest: +SKIP
    torch.Size([50257, 768])
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise CheckpointError(path, f"file is {size} bytes, too short for the 8-byte header length")
            # ACCESS_COPY: a private, writable mapping, so torch gets a writable buffer and the file
            # on disk can never be modified through a tensor.
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    except OSError as e:
        raise CheckpointError(path, f"cannot read: {e.strerror or e}") from None
    n = struct.unpack("<Q", mm[:8])[0]
    entries, _, data_start = parse_header(path, mm[:8 + min(n, size - 8, MAX_HEADER_BYTES)], size)

    out: dict[str, torch.Tensor] = {}
    for name, info in entries.items():
        dtype, itemsize = DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        numel = (end - begin) // itemsize
        start = data_start + begin
        if numel == 0:
            t = torch.empty(info["shape"], dtype=dtype)
        elif start % itemsize == 0:
            t = torch.frombuffer(mm, dtype=dtype, count=numel, offset=start).view(info["shape"])  # no copy
        else:  # misaligned data (legal but unusual): copy these bytes to an aligned buffer
            t = torch.frombuffer(bytearray(mm[start:start + end - begin]), dtype=dtype).view(info["shape"])
        out[name] = t if torch.device(device).type == "cpu" else t.to(device)
    return out


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                     metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` as a safetensors file, atomically, in the layout other readers expect.

    Tensors are stored contiguous and on the CPU, in name order; the header is padded with spaces
    to a multiple of 8 bytes so every tensor starts 8-byte aligned. Two names sharing memory are
    written twice (drop tied weights before saving, as `save_pretrained` does).
    """
    path = Path(path)
    header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
    order, offset = sorted(tensors), 0
    for name in order:
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(path, f"{name!r} is a {type(t).__name__}, not a tensor")
        if t.dtype not in TORCH_TO_NAME:
            raise CheckpointError(path, f"{name!r} has dtype {t.dtype}; only {', '.join(DTYPES)} can be saved")
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": TORCH_TO_NAME[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-(8 + len(blob)) % 8)
    with atomic_open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in order:
            t = tensors[name].detach().to("cpu").contiguous()
            if t.numel():
                f.write(memoryview(t.view(-1).view(torch.uint8).numpy()))
