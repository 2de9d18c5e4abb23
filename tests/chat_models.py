"""Tiny chat models for the chat and server tests, made in about a second, nothing read from ../shared.

`random_chat_model`: a GPT-2 of random weights with a ChatML tokenizer (<|im_start|>, <|im_end|>
special) and Qwen2-Instruct's chat template: its replies are gibberish, but they differ from prompt
to prompt and run on, which is what the protocol tests compare.

`labelling_model`: the same kind of model trained for a few hundred milliseconds to answer the book's
labelling prompt (`lm.labeling.prompt.build_prompt`) with ANSWER (one candidate's ID; learning which
document is about what takes a tiny model far longer): a small instruction model of ours that the
hosted labeller can be pointed at.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from lm.data.loaders import Abstract
from lm.labeling.prompt import build_prompt
from lm.labeling.taxonomy import load_taxonomy
from lm.models.gpt2 import GPT2, GPT2Config
from lm.tokenizers.chat import IM_END, IM_START, encode_chat
from lm.tokenizers.gpt2 import EOT, GPT2Tokenizer
from lm.tokenizers.hf_json import save_tokenizer_json

# Qwen2-Instruct's chat template (the qwen2_tokenizer fixture's).
CHATML_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
    "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}{%- for message in messages %}{%- if not (loop.first and message['role'] == 'system') %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")

ROWS = [("toy:1000", 1, "food", "Food", 0), ("toy:1100", 2, "food > bread", "Loaves", 1),
        ("toy:1200", 2, "food > cheese", "Cheese", 1), ("toy:1300", 2, "food > honey", "Honey", 1)]
CANDS = ["toy:1100", "toy:1200", "toy:1300"]
DOCS = [Abstract("d1", "Bread", "We bake rye loaves."), Abstract("d2", "Cheese", "We age a hard cheese."),
        Abstract("d3", "Honey", "Our bees make honey.")]
ANSWER = "The category is toy:1200"      # what the labelling model says, whatever the document
LR = 3e-3
TEXTS = ["The quick brown fox jumps over the lazy dog. Héllo wörld, naïve café ünïcode — ☃ 日本語 😀.",
         "system user assistant You are a helpful assistant. What is 2 + 2? Tell me a story."]


def taxonomy(folder: Path):
    path = Path(folder) / "taxonomy.tsv"
    path.write_text("qcode\tlevel\tpath\tdefinition\tis_leaf\n" +
                    "".join("\t".join(map(str, r)) + "\n" for r in ROWS), encoding="utf-8")
    return load_taxonomy(path)


def save(folder: Path, model: GPT2, tok: GPT2Tokenizer) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    save_tokenizer_json(tok, folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHATML_TEMPLATE,
                                                              "eos_token": IM_END}), encoding="utf-8")
    return folder


def new_model(tok: GPT2Tokenizer, seed: int, n_positions: int = 512) -> GPT2:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=tok.vocab_size, n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
                     embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, eos_token_id=tok.special_tokens[IM_END],
                     bos_token_id=tok.special_tokens[EOT])
    return GPT2(cfg)


def random_chat_model(folder: Path, seed: int = 0, n_positions: int = 128) -> Path:
    tok = GPT2Tokenizer.train(TEXTS, vocab_size=300, special_tokens=[EOT, IM_START, IM_END])
    model = new_model(tok, seed, n_positions)
    with torch.no_grad():     # larger weights: peaked next-token distributions, varied greedy replies
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    return save(folder, model, tok)


def plain_model(folder: Path, seed: int = 0) -> Path:
    """A plain GPT-2 folder: random weights, vocab.json + merges.txt with <|endoftext|> only, no chat template."""
    tok = GPT2Tokenizer.train(TEXTS, vocab_size=300, special_tokens=[EOT])
    torch.manual_seed(seed)
    model = GPT2(GPT2Config(vocab_size=tok.vocab_size, n_positions=128, n_embd=32, n_layer=2, n_head=2,
                            eos_token_id=tok.eot_id, bos_token_id=tok.eot_id))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    model.save_pretrained(folder)
    tok.save(folder)
    return folder


def labelling_model(folder: Path, steps: int = 45) -> Path:
    """A model that answers the labelling prompt of each of DOCS with ANSWER."""
    tax = taxonomy(folder.parent)
    prompts = [build_prompt(d, CANDS, tax) for d in DOCS]
    tok = GPT2Tokenizer.train(TEXTS + prompts, vocab_size=900, special_tokens=[EOT, IM_START, IM_END])
    model = new_model(tok, 0).train()
    seqs, starts = [], []
    for d, p in zip(DOCS, prompts):
        prompt = encode_chat(tok, [{"role": "user", "content": p}], add_generation_prompt=True)
        seqs.append(prompt + tok.encode(ANSWER) + [tok.special_tokens[IM_END]])
        starts.append(len(prompt))
    T = max(map(len, seqs))
    x = torch.zeros(len(seqs), T, dtype=torch.long)
    y = torch.full((len(seqs), T), -100, dtype=torch.long)
    for i, (s, k) in enumerate(zip(seqs, starts)):
        x[i, :len(s)] = torch.tensor(s)
        y[i, k - 1:len(s) - 1] = torch.tensor(s[k:])          # loss on the answer only
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    for _ in range(steps):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return save(folder, model.eval(), tok)
