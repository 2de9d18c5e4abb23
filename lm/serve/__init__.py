"""`python -m lm.serve FOLDER`: an OpenAI-compatible server for one model, and a chat page, standard library only.

    $ python -m lm.serve runs/x/instruct_sft/model --port 8000
    serving model on http://127.0.0.1:8000  (chat page: /, API: /v1)
    $ curl -s localhost:8000/v1/chat/completions -d '{"messages": [{"role": "user", "content": "What is 3 plus 4?"}]}'

Any client of the OpenAI API works against it (`base_url="http://127.0.0.1:8000/v1"`), this project's
hosted labeller included (`python -m lm.labeling --url http://127.0.0.1:8000/v1 ...`).

Read in this order: `protocol.py` (the requests and replies of the API, checked field by field),
`server.py` (HTTP: routes, body limits, API key, streaming), `page.py` (the chat page). The model
itself answers through `lm.inference.engine` (the engine `python -m lm.chat` uses too).

Binds 127.0.0.1 (this machine only) unless `--host` says otherwise; `--api-key-env NAME` makes
every /v1 request need `Authorization: Bearer $NAME` (the key is read from the environment, not
the command line, where other users could see it).
"""
from __future__ import annotations

import argparse
import sys

import torch

from lm.chat import load_engine
from lm.errors import LMError
from lm.labeling.hosted import LOOPBACK, key_from_env
from lm.serve.server import Server


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lm.serve", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="a GPT-2 or Qwen2 model folder (Hugging Face layout with its tokenizer)")
    p.add_argument("--adapter", default=None, help="a LoRA adapter folder (PEFT's format) to merge into the model")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000; 0: any free port)")
    p.add_argument("--api-key-env", default=None, metavar="NAME",
                   help="require 'Authorization: Bearer <key>' with the key in environment variable NAME")
    p.add_argument("--max-tokens", type=int, default=512,
                   help="reply length when a request gives no max_tokens (at most what the context leaves; default 512)")
    p.add_argument("--max-body", type=int, default=1 << 20, help="largest request body in bytes (default 1 MiB)")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16", "auto"],
                   help="weights' dtype (default float32; auto: the checkpoint's)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--quiet", action="store_true", help="no request log")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    try:
        if args.max_tokens < 1 or args.max_body < 1 or not 0 <= args.port < 65536:
            raise LMError("--max-tokens and --max-body must be >= 1, --port in 0..65535")
        key = key_from_env(args.api_key_env)
        engine = load_engine(args.folder, args.adapter, args.device, args.dtype)
        server = Server((args.host, args.port), engine, key, args.max_body, args.max_tokens, args.quiet)
    except (LMError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.host not in LOOPBACK and key is None:
        print(f"warning: listening on {args.host} without an API key: anyone who can reach this port can use "
              "the model (--api-key-env NAME)", file=sys.stderr)
    print(f"serving {engine.name} on {server.url}  (chat page: /, API: /v1)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
