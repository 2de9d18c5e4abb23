"""`python -m lm.chat FOLDER`: talk to a language model in the terminal, as the book's instruct notebook ends.

FOLDER is any causal LM folder we load (`lm.models.auto.load_causal_lm`): the instruction-tuned
GPT-2 that `python run_all.py --only instruct_sft --out OUT` saves in `OUT/instruct_sft/model`, a
Qwen2 / Qwen2.5-Instruct folder, or a plain GPT-2 folder (no chat template: what you type is
continued as text). `--adapter DIR` adds a LoRA adapter in PEFT's format and merges it; an
adapter folder given as FOLDER brings the base model its adapter_config.json names.

    $ python -m lm.chat runs/x/instruct_sft/model --temperature 0
    > What is 3 plus 4?
    7
    > /reset

The reply is printed token by token as the model writes it (`lm.inference.engine`, the one
generation path with its KV cache). The conversation is kept within the model's context: when
the next turn would not fit, the oldest turns are dropped, with a note. Commands: `/reset` forgets
the conversation, `/quit` (or Ctrl-D) leaves; Ctrl-C while the model writes stops the reply (what
it wrote stays in the conversation), not the session.

`load_engine(folder, adapter)` is also what `python -m lm.serve` loads its model with.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

import torch

from lm.errors import ConfigError, LMError
from lm.finetune.lora import CONFIG_NAME as ADAPTER_CONFIG
from lm.finetune.lora import adapter_base, load_adapted, read_adapter_config
from lm.inference.engine import Engine, Settings
from lm.models.auto import load_causal_lm
from lm.tokenizers.chat import DEFAULT_SYSTEM, chat_format, default_system_from_dir
from lm.tokenizers.hf_json import tokenizer_from_dir
from lm.utils import choose_device

FORMAT_NAMES = {"chatml": "ChatML", "book": "the book's ChatML-like format",
                None: "no chat template: your text is continued"}


def load_engine(folder: str | Path, adapter: str | Path | None = None, device: str | None = None,
                dtype: str | None = None) -> Engine:
    """The model of `folder` (GPT-2 or Qwen2, from config.json), its tokenizer and chat format,
    with `adapter`'s LoRA merged in when given. `folder` may be an adapter folder itself: its
    base model is then the one its adapter_config.json names."""
    folder = Path(folder).expanduser()
    if adapter is None and (folder / ADAPTER_CONFIG).is_file():
        adapter, folder = folder, adapter_base(folder)
    tok = tokenizer_from_dir(folder)
    kind = chat_format(folder, tok)
    if adapter is None:
        model = load_causal_lm(folder, dtype=dtype, device=choose_device(device))
    else:
        task = read_adapter_config(Path(adapter) / ADAPTER_CONFIG).task_type
        if task != "CAUSAL_LM":
            raise ConfigError(f"{adapter}: a {task} adapter, not a language model's (CAUSAL_LM)")
        model = load_adapted(adapter, folder, dtype=dtype, device=choose_device(device), merged=True)
    system = default_system_from_dir(folder) if kind == "chatml" else DEFAULT_SYSTEM
    name = f"{folder.parent.name}/{folder.name}" if folder.name == "model" and folder.parent.name else folder.name
    name += f"+{Path(adapter).name}" if adapter is not None else ""
    return Engine(model, tok, kind, default_system=system, name=name)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lm.chat", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="a GPT-2 or Qwen2 model folder (Hugging Face layout with its tokenizer)")
    p.add_argument("--adapter", default=None, help="a LoRA adapter folder (PEFT's format) to merge into the model")
    p.add_argument("--temperature", type=float, default=0.7, help="0: greedy, the most probable token every time "
                                                                    "(default 0.7)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most probable tokens (0: no limit)")
    p.add_argument("--top-p", type=float, default=0.9, help="sample among the fewest tokens holding this "
                                                            "probability (1: no limit; default 0.9)")
    p.add_argument("--max-new-tokens", type=int, default=256,
                   help="longest reply in tokens (default 256; at most what the context leaves)")
    p.add_argument("--seed", type=int, default=None, help="seed for the draws, for a conversation you can repeat")
    p.add_argument("--system", default=None, help="a system message to start the conversation with")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16", "auto"],
                   help="weights' dtype (default float32; auto: the checkpoint's)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's; 1 is fastest "
                                                             "for tiny models on a busy machine)")
    return p


class Chat:
    """The conversation and the terminal: read a line, answer it, keep the history in the context."""

    def __init__(self, engine: Engine, settings: Settings, out: TextIO, system: str | None = None,
                 seed: int | None = None):
        self.engine, self.settings, self.out, self.system = engine, settings, out, system
        self.generator = torch.Generator(device=engine.device).manual_seed(seed) if seed is not None else None
        self.reset()

    def reset(self) -> None:
        self.messages: list[dict] = [{"role": "system", "content": self.system}] if self.system else []
        self.document = ""              # continuation mode: the text so far

    def room(self) -> int:
        """max_new_tokens, cut to half the context (the rest is for the conversation)."""
        c = self.engine.context
        return self.settings.max_new_tokens if c is None else min(self.settings.max_new_tokens, c // 2)

    def prompt_ids(self, line: str) -> list[int]:
        """The prompt for the next reply, with the history cut to fit (a note when turns are dropped)."""
        e, room = self.engine, self.room()
        if e.format is None:
            ids = e.encode_text(self.document + ("\n" if self.document else "") + line)
            if e.context is not None and len(ids) + room > e.context:
                keep = e.context - room
                self.say(f"[the text is longer than the context: its first {len(ids) - keep} tokens are dropped]")
                ids = ids[-keep:]
            return ids
        kept, dropped = e.fit_history(self.messages + [{"role": "user", "content": line}], room)
        if dropped:
            self.say(f"[{dropped} oldest message{'s' if dropped > 1 else ''} dropped to fit the model's context "
                     f"of {e.context} tokens]")
        self.messages = kept[:-1]
        return e.encode_chat(kept)

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def answer(self, line: str) -> str:
        """Stream the reply to `line` to the terminal; returns its text (cut short by Ctrl-C)."""
        ids = self.prompt_ids(line)
        settings = Settings(**{**vars(self.settings), "max_new_tokens": self.room()})
        reply = self.engine.reply(ids, settings, self.generator)
        try:
            for piece in reply:
                self.out.write(piece)
                self.out.flush()
            self.out.write("\n")
        except KeyboardInterrupt:
            self.out.write(" [stopped]\n")
        self.out.flush()
        if self.engine.format is None:
            self.document += ("\n" if self.document else "") + line + reply.text
        else:
            self.messages += [{"role": "user", "content": line}, {"role": "assistant", "content": reply.text}]
        return reply.text

    def command(self, line: str) -> bool:
        """Handle a /command; False means leave."""
        if line in ("/quit", "/exit"):
            return False
        if line == "/reset":
            self.reset()
            self.say("[conversation reset]")
        else:
            self.say(f"[unknown command {line}: /reset, /quit]")
        return True


def read_line(stdin: TextIO, out: TextIO) -> str | None:
    """The next line typed (None at the end of input); `input()` on a terminal, for line editing."""
    if stdin is sys.stdin and stdin.isatty():
        try:
            return input("> ")
        except EOFError:
            return None
    out.write("> ")
    out.flush()
    line = stdin.readline()
    return None if line == "" else line.rstrip("\n")


def main(argv: list[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    stdin, out = stdin or sys.stdin, stdout or sys.stdout
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    try:
        settings = Settings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p)
        settings.validate()
        engine = load_engine(args.folder, args.adapter, args.device, args.dtype)
    except LMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if engine.format is None and args.system:
        print("error: --system needs a model with a chat template", file=sys.stderr)
        return 2
    chat = Chat(engine, settings, out, args.system, args.seed)
    chat.say(f"[{engine.name}: {FORMAT_NAMES[engine.format]}; context {engine.context} tokens; "
             f"/reset, /quit; Ctrl-C stops a reply]")
    while True:
        try:
            line = read_line(stdin, out)
        except KeyboardInterrupt:
            out.write("\n[Ctrl-C stops a reply; /quit or Ctrl-D leaves]\n")
            continue
        if line is None:
            out.write("\n")
            return 0
        if not line.strip():
            continue
        if line.startswith("/"):
            if not chat.command(line.strip()):
                return 0
            continue
        try:
            chat.answer(line)
        except ConfigError as e:         # a message that cannot be sent (too long, a special token): say so
            chat.say(f"[not sent: {e}]")


if __name__ == "__main__":
    sys.exit(main())
