"""Checkpoint reading/writing: round trips, sharded and .bin files, every corruption the issue lists, a fuzz."""
from __future__ import annotations

import json
import random
import struct

import pytest
import torch

from conftest import SHARED_FIXTURES, needs_fixtures
from lm.errors import CheckpointError
from lm.checkpoints.hf import load_folder, load_sharded, load_torch_bin
from lm.checkpoints.safetensors import load_safetensors, read_safetensors_header, save_safetensors


def small_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(4, 3, generator=g),
        "b.bias": torch.randn(5, generator=g).half(),
        "c.weight": torch.randn(2, 3, generator=g).to(torch.bfloat16),
        "d.scalar": torch.tensor(1.5),
        "e.empty": torch.zeros(0, 4),
    }


def write_raw(path, header: dict, data: bytes, pad: int = 0) -> None:
    blob = json.dumps(header).encode() + b" " * pad
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def test_round_trip_all_dtypes_and_shapes(tmp_path):
    t = small_tensors()
    save_safetensors(t, tmp_path / "m.safetensors", {"format": "pt", "note": "x"})
    back = load_safetensors(tmp_path / "m.safetensors")
    assert set(back) == set(t)
    for k in t:
        assert back[k].dtype == t[k].dtype and back[k].shape == t[k].shape and torch.equal(back[k], t[k])
    entries, meta, start = read_safetensors_header(tmp_path / "m.safetensors")
    assert meta == {"format": "pt", "note": "x"} and start % 8 == 0  # header padded to 8-byte alignment


def test_loaded_tensors_are_copy_on_write(tmp_path):
    path = tmp_path / "m.safetensors"
    save_safetensors({"w": torch.arange(4.0)}, path)
    before = path.read_bytes()
    t = load_safetensors(path)["w"]
    t += 1                                      # writable, but the file must not change
    assert path.read_bytes() == before and torch.equal(load_safetensors(path)["w"], torch.arange(4.0))


@needs_fixtures
def test_writer_output_matches_reference_layout(tmp_path):
    """Re-saving the reference library's file gives the same tensor layout (names sorted, same offsets)."""
    src = SHARED_FIXTURES / "gpt2_lm_safetensors" / "model.safetensors"
    entries, meta, _ = read_safetensors_header(src)
    save_safetensors(load_safetensors(src), tmp_path / "x.safetensors", meta)
    ours, ours_meta, _ = read_safetensors_header(tmp_path / "x.safetensors")
    assert ours_meta == meta
    assert {k: v["data_offsets"] for k, v in ours.items()} == {k: v["data_offsets"] for k, v in entries.items()}


# ---- corruptions named in the issue --------------------------------------------------------

def good_header():
    return {"__metadata__": {"format": "pt"},
            "x": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
            "y": {"dtype": "F16", "shape": [4], "data_offsets": [16, 24]}}


@pytest.mark.parametrize("mutate, message", [
    (lambda h: h["x"].update(dtype="F64"), "dtype 'F64' is not supported"),
    (lambda h: h["x"].update(dtype="I8"), "dtype 'I8' is not supported"),
    (lambda h: h["y"].update(data_offsets=[16, 40]), "run past the end"),
    (lambda h: h["y"].update(data_offsets=[8, 16]), "overlaps"),
    (lambda h: h["x"].update(shape=[2, 3]), "expected 24"),
    (lambda h: h["x"].update(data_offsets=[16, 0]), "0 <= begin <= end"),
    (lambda h: h["x"].update(shape=[2, -2]), "non-negative integers"),
    (lambda h: h["x"].update(shape=[2.0, 2]), "non-negative integers"),
    (lambda h: h["x"].update(extra=1), "exactly the fields"),
    (lambda h: h.update(__metadata__={"format": 1}), "__metadata__"),
])
def test_bad_headers_are_refused_by_name(tmp_path, mutate, message):
    h = good_header()
    mutate(h)
    write_raw(tmp_path / "m.safetensors", h, bytes(24))
    with pytest.raises(CheckpointError, match=message) as e:
        load_safetensors(tmp_path / "m.safetensors")
    assert "m.safetensors" in str(e.value)


def test_hole_and_trailing_bytes_are_refused(tmp_path):
    h = good_header()
    h["y"]["data_offsets"] = [20, 28]
    write_raw(tmp_path / "m.safetensors", h, bytes(28))
    with pytest.raises(CheckpointError, match="hole of 4 bytes"):
        load_safetensors(tmp_path / "m.safetensors")
    write_raw(tmp_path / "m.safetensors", good_header(), bytes(30))
    with pytest.raises(CheckpointError, match="extra bytes"):
        load_safetensors(tmp_path / "m.safetensors")


def test_duplicate_names_are_refused(tmp_path):
    blob = (b'{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
            b'"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}')
    (tmp_path / "m.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + bytes(8))
    with pytest.raises(CheckpointError, match="duplicate key 'x'"):
        load_safetensors(tmp_path / "m.safetensors")


def test_truncated_file_and_long_header(tmp_path):
    path = tmp_path / "m.safetensors"
    save_safetensors(small_tensors(), path)
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    with pytest.raises(CheckpointError, match="run past the end|cover"):
        load_safetensors(path)
    path.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="too short"):
        load_safetensors(path)
    path.write_bytes(struct.pack("<Q", 10**9) + data[8:])
    with pytest.raises(CheckpointError, match="longer than the rest of the file"):
        load_safetensors(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="too short"):
        load_safetensors(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read"):
        load_safetensors(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="no weights found"):
        load_folder(tmp_path)


# ---- the fuzz -------------------------------------------------------------------------------

def _signature(path) -> list:
    """What the file means: for each tensor in data order, (begin, dtype, shape, bytes)."""
    entries, _, _ = read_safetensors_header(path)
    tensors = load_safetensors(path)
    rows = []
    for name, info in entries.items():
        t = tensors[name]
        rows.append((info["data_offsets"][0], str(t.dtype), tuple(t.shape), t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()))
    return sorted(rows)


def test_fuzz_header_and_length_corruptions(tmp_path):
    """Hundreds of random corruptions: each raises CheckpointError or loads exactly the original tensors.

    (A renamed tensor or edited metadata is harmless; the bytes of each tensor must not change.)
    """
    path = tmp_path / "orig.safetensors"
    save_safetensors(small_tensors(), path)
    original = path.read_bytes()
    want = _signature(path)
    n = struct.unpack("<Q", original[:8])[0]
    rng = random.Random(1234)
    outcomes = {"error": 0, "same": 0}
    bad = tmp_path / "bad.safetensors"
    for trial in range(400):
        data = bytearray(original)
        kind = trial % 4
        if kind == 0:                                   # the length prefix
            data[rng.randrange(8)] = rng.randrange(256)
        elif kind == 1:                                 # 1-3 header bytes, any value
            for _ in range(rng.randint(1, 3)):
                data[8 + rng.randrange(n)] = rng.randrange(256)
        elif kind == 2:                                 # 1 header byte, a JSON-looking value
            data[8 + rng.randrange(n)] = ord(rng.choice('0123456789[]{},:"-. eE'))
        else:                                           # truncation anywhere
            data = data[:rng.randrange(len(data))]
        bad.write_bytes(bytes(data))
        try:
            got = _signature(bad)
        except CheckpointError:
            outcomes["error"] += 1
            continue
        assert got == want, f"trial {trial}: corrupted file loaded different tensors"
        outcomes["same"] += 1
    assert outcomes["error"] > 200 and outcomes["error"] + outcomes["same"] == 400


# ---- sharded, .bin, folders -------------------------------------------------------------------

def test_sharded_round_trip_and_errors(tmp_path):
    t = small_tensors()
    save_safetensors({k: t[k] for k in ["a.weight", "b.bias"]}, tmp_path / "s1.safetensors")
    save_safetensors({k: t[k] for k in ["c.weight", "d.scalar", "e.empty"]}, tmp_path / "s2.safetensors")
    wm = {"a.weight": "s1.safetensors", "b.bias": "s1.safetensors", "c.weight": "s2.safetensors",
          "d.scalar": "s2.safetensors", "e.empty": "s2.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
    back = load_sharded(tmp_path / "model.safetensors.index.json")
    assert all(torch.equal(back[k], t[k]) for k in t)
    wm["f.missing"] = "s2.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
    with pytest.raises(CheckpointError, match="f.missing"):
        load_sharded(tmp_path / "model.safetensors.index.json")
    wm = {"a.weight": "../s1.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
    with pytest.raises(CheckpointError, match="must be a file name"):
        load_sharded(tmp_path / "model.safetensors.index.json")


def test_torch_bin_is_loaded_weights_only(tmp_path):
    t = {"w": torch.arange(6.0).view(2, 3)}
    torch.save(t, tmp_path / "pytorch_model.bin")
    assert torch.equal(load_folder(tmp_path)[0]["w"], t["w"])

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"w": Evil()}, tmp_path / "evil.bin", _use_new_zipfile_serialization=True)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_torch_bin(tmp_path / "evil.bin")
    (tmp_path / "junk.bin").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError):
        load_torch_bin(tmp_path / "junk.bin")


@needs_fixtures
@pytest.mark.parametrize("folder", ["gpt2_lm_safetensors", "gpt2_lm_bin", "gpt2_lm_sharded",
                                    "gpt2_base_safetensors", "gpt2_classifier_safetensors"])
def test_fixture_folders_load_with_same_tensors(folder):
    ref, _ = load_folder(SHARED_FIXTURES / "gpt2_lm_safetensors")
    got, _ = load_folder(SHARED_FIXTURES / folder)
    key = "transformer.h.1.mlp.c_fc.weight" if "transformer.h.1.mlp.c_fc.weight" in got else "h.1.mlp.c_fc.weight"
    assert got[key].shape == (32, 128)
    if folder.startswith("gpt2_lm"):             # the three LM folders hold the same random model
        assert torch.equal(got["transformer.wte.weight"], ref["transformer.wte.weight"])
