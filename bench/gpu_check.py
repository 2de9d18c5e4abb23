#!/usr/bin/env python
"""GPU checks: the CUDA paths give the CPU's answers, in float32 and (loosely) in bfloat16.

Run on a machine with a CUDA GPU (the test suite itself runs on the CPU):

    python bench/gpu_check.py --fixtures ../shared/fixtures

1. every GPT-2 fixture folder: logits on the GPU vs `expected_output.npy` (float32 and bfloat16);
2. the reference greedy continuation (`gpt2_lm_safetensors/greedy.json`) with the KV cache on the GPU;
3. cached == uncached greedy generation and batched left-padded == one by one, on the GPU;
4. the chapter-4 decoder: fused attention == the book's per-head attention on the GPU, and a few
   bf16-autocast training steps that lower the loss.
Prints one line per check and exits 1 if any failed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from lm.inference.generate import generate
from lm.models.gpt2 import GPT2, GPT2Base, GPT2Config, GPT2ForSequenceClassification
from lm.models.transformer import DecoderConfig, DecoderLanguageModel

FAILED: list[str] = []


def check(name: str, ok: bool, detail: str) -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        FAILED.append(name)


def fixture_parity(folder: Path, dev: torch.device) -> None:
    fx = json.loads((folder / "fixture.json").read_text())
    ids = torch.tensor(fx["input_ids"], device=dev)
    expected = np.load(folder / "expected_output.npy")
    cls = {"last_hidden_state": GPT2Base}.get(fx["output"], GPT2ForSequenceClassification
                                                if "classifier" in folder.name else GPT2)
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 0.1)):
        model = cls.from_pretrained(folder, dtype=dtype, device=dev)
        with torch.no_grad():
            out = model(ids).float().cpu().numpy()
        err = float(np.abs(out - expected).max())
        scale = float(np.abs(expected).max())
        check(f"{folder.name} {str(dtype)[6:]}", err <= tol * max(1.0, scale), f"max |diff| {err:.2e} (scale {scale:.2f})")


def generation(fixtures: Path, dev: torch.device) -> None:
    folder = fixtures / "gpt2_lm_safetensors"
    ref = json.loads((folder / "greedy.json").read_text())
    model = GPT2.from_pretrained(folder, device=dev)
    out = generate(model, torch.tensor(ref["prompt"], device=dev), 20).cpu().tolist()
    check("greedy.json with KV cache", out == ref["greedy_20"], "token for token" if out == ref["greedy_20"] else str(out))
    torch.manual_seed(0)
    m = GPT2(GPT2Config(vocab_size=61, n_positions=48, n_embd=32, n_layer=2, n_head=4)).to(dev).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.35)
    prompts = [[1, 2, 3, 4, 5], [7, 8], [9, 10, 11, 12, 13, 14, 15], [20]]
    a = generate(m, prompts, 25)
    b = generate(m, prompts, 25, use_cache=False)
    check("cached == uncached", torch.equal(a, b), "batch of 4 left-padded prompts, 25 tokens")
    one = all(torch.equal(generate(m, [p], 25)[0, -25:], a[i, -25:]) for i, p in enumerate(prompts))
    check("batched == one by one", one, "new tokens of each row")


def decoder(dev: torch.device) -> None:
    torch.manual_seed(0)
    lit = DecoderLanguageModel(DecoderConfig(100, 64, 8, 2, "reference")).to(dev)
    fast = lit.converted("fast").to(dev)
    x = torch.randint(0, 100, (4, 30), device=dev)
    with torch.no_grad():
        err = (lit(x) - fast(x)).abs().max().item()
    check("decoder fused == literal attention", err < 1e-4, f"max |diff| {err:.2e}")
    opt = torch.optim.AdamW(fast.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            logits = fast(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, 100), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    check("decoder bf16 autocast training", losses[-1] < 0.5 * losses[0], f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Check the CUDA paths against the CPU reference results.")
    p.add_argument("--fixtures", default="../shared/fixtures", help="folder with the GPT-2 fixture folders")
    p.add_argument("--device", default="cuda", help="device to check (default cuda)")
    a = p.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to check", file=sys.stderr)
        return 2
    dev = torch.device(a.device)
    fixtures = Path(a.fixtures)
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else dev}")
    if fixtures.is_dir():
        for folder in sorted(fixtures.iterdir()):
            if (folder / "fixture.json").is_file():
                fixture_parity(folder, dev)
        generation(fixtures, dev)
    else:
        print(f"fixtures not found at {fixtures}: skipping the parity checks")
    decoder(dev)
    print(f"{len(FAILED)} failed" + (f": {', '.join(FAILED)}" if FAILED else ""))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
