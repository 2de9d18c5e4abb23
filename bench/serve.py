#!/usr/bin/env python
"""Benchmark: `python -m lm.serve`'s streams against the same model driven in-process.

For 1 and for C concurrent streams (default 8) we measure, each way:

    tokens/s   all tokens generated / wall time of the whole run (C streams together)
    TTFT       time to first token: request sent -> first piece of text received (median, max)

In-process the streams are threads that iterate `Engine.reply` under `engine.lock`, exactly what
the server's handlers do; through the server they are HTTP clients on 127.0.0.1 reading
server-sent events from /v1/completions. The difference is what the server adds: HTTP, JSON and
one event per token. Stated as a ratio: server seconds per token / in-process seconds per token
(1.00 = no overhead), and in microseconds per token. The model answers one stream at a time (the
engine's lock), so with C streams the aggregate tokens/s stays about that of one and the last
stream waits for the others: its TTFT grows with C.

The default model has random weights (a GPT-2 of width 256, 4 layers, a byte-level BPE trained
on the embedded news; speed does not care what the weights say); `--folder` takes a real one
(e.g. `OUT/instruct_sft/model`). Every request asks for `--new-tokens` tokens, greedy; a model may
stop earlier at its end-of-text, so tokens are counted as generated (the reply's / the usage
counts), not assumed. Each setting runs `--repeat` times, the two ways interleaved, and the
fastest run of each is reported (the one least disturbed by other work on the machine).

    python bench/serve.py                                # random small GPT-2, 1 and 8 streams
    python bench/serve.py --folder runs/x/instruct_sft/model --streams 4 --new-tokens 64
"""
from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from lm.chat import load_engine
from lm.inference.engine import Engine, Settings
from lm.models.gpt2 import GPT2, GPT2Config
from lm.serve.server import Server
from lm.tokenizers.chat import IM_END, IM_START
from lm.tokenizers.gpt2 import EOT, GPT2Tokenizer

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["The market in Thornbeck", "Once upon a time", "The river rose", "In the morning the baker",
           "A letter came from", "The old mill", "Nobody knew why", "At the harbour"]


def random_model(folder: Path) -> Path:
    """A random GPT-2 (width 256, 4 layers) with a 2,000-token BPE trained on the embedded news."""
    text = (REPO / "data" / "news" / "train.txt").read_text(encoding="utf-8")[:400_000]
    tok = GPT2Tokenizer.train(text.split("\n"), 2000, special_tokens=[EOT, IM_START, IM_END])
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=tok.vocab_size, n_positions=512, n_embd=256, n_layer=4, n_head=4,
                            eos_token_id=tok.eot_id, bos_token_id=tok.eot_id))
    model.save_pretrained(folder)
    tok.save(folder)
    return folder


def in_process(engine: Engine, streams: int, new_tokens: int) -> dict:
    """`streams` threads each making one reply, as the server's handlers do."""
    ttft, tokens = [0.0] * streams, [0] * streams
    start = threading.Barrier(streams + 1)

    def one(i):
        ids = engine.encode_text(PROMPTS[i % len(PROMPTS)])
        start.wait()
        t0 = time.perf_counter()
        with engine.lock:
            reply = engine.reply(ids, Settings(max_new_tokens=new_tokens, temperature=0))
            for n, _ in enumerate(reply):
                if n == 0:
                    ttft[i] = time.perf_counter() - t0
        tokens[i] = reply.completion_tokens

    return run_threads(one, streams, start, ttft, tokens)


def through_server(port: int, streams: int, new_tokens: int) -> dict:
    """`streams` HTTP clients each reading one streamed completion."""
    ttft, tokens = [0.0] * streams, [0] * streams
    start = threading.Barrier(streams + 1)

    def one(i):
        body = json.dumps({"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": new_tokens, "temperature": 0,
                           "stream": True, "stream_options": {"include_usage": True}})
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        start.wait()
        t0 = time.perf_counter()
        conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        first = True
        for line in resp:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            event = json.loads(line[6:])
            if first and event["choices"] and event["choices"][0]["text"]:
                ttft[i], first = time.perf_counter() - t0, False
            if event.get("usage"):
                tokens[i] = event["usage"]["completion_tokens"]
        conn.close()

    return run_threads(one, streams, start, ttft, tokens)


def run_threads(one, streams: int, start: threading.Barrier, ttft: list, tokens: list) -> dict:
    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"tokens": sum(tokens), "seconds": wall, "tokens_per_s": sum(tokens) / wall,
            "ttft_median_ms": 1000 * statistics.median(ttft), "ttft_max_ms": 1000 * max(ttft)}


def best(runs: list[dict]) -> dict:
    """The run with the highest tokens/s (the one least disturbed by other work on the machine)."""
    return max(runs, key=lambda r: r["tokens_per_s"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", default=None, help="a model folder (default: a random small GPT-2 made here)")
    p.add_argument("--streams", type=int, default=8, help="concurrent streams besides 1 (default 8)")
    p.add_argument("--new-tokens", type=int, default=48, help="tokens per stream (default 48)")
    p.add_argument("--repeat", type=int, default=3, help="runs per setting; the fastest is reported (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder) if args.folder else random_model(Path(tmp) / "random-gpt2")
        engine = load_engine(folder, device="cpu")
        server = Server(("127.0.0.1", 0), engine, quiet=True)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            in_process(engine, 1, 8)                                          # warm-up
            results = {}
            for streams in (1, args.streams):
                runs = {"in_process": [], "server": []}
                for _ in range(args.repeat):          # interleaved: a busy phase of the machine hits both ways
                    runs["in_process"].append(in_process(engine, streams, args.new_tokens))
                    runs["server"].append(through_server(server.server_address[1], streams, args.new_tokens))
                results[streams] = {way: best(r) for way, r in runs.items()}
        finally:
            server.shutdown()
            server.server_close()
    print(f"model {engine.name}: {sum(p.numel() for p in engine.model.parameters()) / 1e6:.1f} M parameters, "
          f"{args.new_tokens} new tokens per stream, torch threads {args.threads}, best of {args.repeat}")
    print(f"{'streams':>7} {'way':>10} {'tokens/s':>9} {'TTFT median':>12} {'TTFT max':>9}  per token")
    for streams, r in results.items():
        for way in ("in_process", "server"):
            x = r[way]
            print(f"{streams:>7} {way:>10} {x['tokens_per_s']:>9.1f} {x['ttft_median_ms']:>10.1f}ms "
                  f"{x['ttft_max_ms']:>7.1f}ms  {1e6 / x['tokens_per_s']:.0f} us")
        ratio = r["in_process"]["tokens_per_s"] / r["server"]["tokens_per_s"]
        extra = 1e6 / r["server"]["tokens_per_s"] - 1e6 / r["in_process"]["tokens_per_s"]
        r["overhead_ratio"], r["overhead_us_per_token"] = ratio, extra
        print(f"{streams:>7} server overhead per token: {ratio:.3f}x ({extra:+.0f} us per token)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
