"""The chat engine (lm/inference/engine.py), the chat formats and `python -m lm.chat`.

A scripted model (it writes a fixed sequence of tokens, whatever it reads) pins down how a reply
ends and how it is cut into pieces; tiny random models (tests/chat_models.py) run the terminal chat.
"""
from __future__ import annotations

import io
import json
import shutil

import pytest
import torch

import chat_models
from lm.chat import load_engine
from lm.chat import main as chat_main
from lm.errors import SpecialTokenError, TokenizerFileError
from lm.finetune.sft import instruct_pair
from lm.inference.engine import ContextError, Engine, Settings
from lm.inference.generate import generate
from lm.models.gpt2 import GPT2Config
from lm.tokenizers.chat import BOOK_CHAT_TEMPLATE, IM_END, IM_START, apply_book_template, chat_format
from lm.tokenizers.gpt2 import BYTE_ENCODER, EOT, GPT2Tokenizer
from lm.tokenizers.hf_json import tokenizer_from_dir
from lm.utils import torch_threads



@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one torch thread (two threads waiting on each other on a busy machine cost 10-20x)."""
    with torch_threads(1):
        yield

@pytest.fixture(scope="module")
def random_folder(tmp_path_factory):
    return chat_models.random_chat_model(tmp_path_factory.mktemp("chat") / "random")


# ------------------------------------------------------------------------------------------
# Formats
# ------------------------------------------------------------------------------------------

def test_book_format_is_what_instruct_sft_trains_on():
    pair = instruct_pair("What is 3 plus 4?", "7")
    user = [{"role": "user", "content": "What is 3 plus 4?"}]
    assert apply_book_template(user, add_generation_prompt=True) == pair.prompt
    turn = apply_book_template(user + [{"role": "assistant", "content": "7"}])
    assert turn == pair.prompt + pair.completion + "\n"       # the answer as the model learned to write it
    jinja2 = pytest.importorskip("jinja2")
    convo = [{"role": "system", "content": "Be brief."}, *user, {"role": "assistant", "content": "7"},
             {"role": "user", "content": "And 5 plus 5?"}]
    for messages in (user, convo):
        rendered = jinja2.Environment().from_string(BOOK_CHAT_TEMPLATE).render(messages=messages, add_generation_prompt=True)
        assert rendered == apply_book_template(messages, add_generation_prompt=True)


def test_chat_format_of_a_folder(random_folder, tmp_path):
    tok = tokenizer_from_dir(random_folder)
    assert chat_format(random_folder, tok) == "chatml"
    plain = tmp_path / "plain"
    shutil.copytree(random_folder, plain)
    (plain / "tokenizer_config.json").write_text("{}")
    plain_tok = GPT2Tokenizer(tok.encoder, tok.merges, [EOT])                  # no ChatML tokens
    assert chat_format(plain, plain_tok) is None
    (plain / "tokenizer_config.json").write_text(json.dumps({"chat_template": BOOK_CHAT_TEMPLATE}))
    assert chat_format(plain, plain_tok) == "book"
    (plain / "tokenizer_config.json").write_text(json.dumps({"chat_template": "[INST] {{ messages }} [/INST]"}))
    with pytest.raises(TokenizerFileError, match="neither ChatML nor the book's format"):
        chat_format(plain, plain_tok)


# ------------------------------------------------------------------------------------------
# Replies, on a scripted model
# ------------------------------------------------------------------------------------------

class Cache:
    def __init__(self):
        self.length = 0


class Scripted(torch.nn.Module):
    """Writes `script` token by token, whatever the prompt (the generation protocol, nothing more)."""

    def __init__(self, script: list[int], vocab_size: int, n_positions: int = 64):
        super().__init__()
        self.script, self.w = script, torch.nn.Parameter(torch.zeros(1))
        self.config = GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=4, n_layer=1, n_head=1)

    def new_cache(self, batch, max_len):
        return Cache()

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, last_only=False):
        if cache.length == 0:
            self.prompt_length = input_ids.shape[1]
        cache.length += input_ids.shape[1]
        logits = torch.zeros(input_ids.shape[0], 1, self.config.vocab_size)
        logits[:, 0, self.script[cache.length - self.prompt_length]] = 1.0
        return logits


@pytest.fixture(scope="module")
def gpt2_tok():
    """A GPT-2-like tokenizer: bytes + a few merges, <|endoftext|> special, no ChatML tokens."""
    return GPT2Tokenizer.train(chat_models.TEXTS + ["<|im_end|> the answer"], 300, special_tokens=[EOT])


def byte_ids(tok, text: str) -> list[int]:
    return [tok.encoder[BYTE_ENCODER[b]] for b in text.encode("utf-8")]


def run(engine, settings=None) -> tuple[list[str], object]:
    reply = engine.reply([1, 2, 3], settings or Settings(max_new_tokens=40))
    return list(reply), reply


def test_book_format_answer_ends_before_the_text_marker(gpt2_tok):
    tok = gpt2_tok
    script = byte_ids(tok, "Seven\n" + IM_END) + [tok.eot_id] + byte_ids(tok, "never")
    engine = Engine(Scripted(script, tok.vocab_size), tok, "book")
    pieces, reply = run(engine)
    assert reply.text == "Seven" and "".join(pieces) == "Seven" and reply.finish_reason == "stop"
    assert reply.completion_tokens == len(byte_ids(tok, "Seven\n" + IM_END))   # stopped at the marker
    assert not any("<" in p or "\n" in p for p in pieces)                         # never shown, even in part
    assert len(pieces) >= 3                                                       # streamed, not all at the end


def test_stop_ids_stop_strings_length_and_utf8(gpt2_tok):
    tok = gpt2_tok
    text = "naïve café ☃ ok"
    script = byte_ids(tok, text) + [tok.eot_id] + byte_ids(tok, "tail")
    engine = Engine(Scripted(script, tok.vocab_size), tok, None)
    pieces, reply = run(engine)
    assert reply.text == text and "".join(pieces) == text and reply.finish_reason == "stop"
    assert "\ufffd" not in "".join(pieces) and all(pieces)       # a character split over tokens comes out whole
    assert reply.completion_tokens == len(script) - 4 and reply.ids[-1] == tok.eot_id
    pieces, reply = run(engine, Settings(max_new_tokens=40, stop=["é ☃", "zz"]))
    assert reply.text == "naïve caf" == "".join(pieces) and reply.finish_reason == "stop"
    pieces, reply = run(engine, Settings(max_new_tokens=4))
    assert reply.text == "naï" and reply.finish_reason == "length" and reply.completion_tokens == 4
    with pytest.raises(ContextError, match="context is 64 tokens"):
        engine.reply([1] * 30, Settings(max_new_tokens=40))


def test_reply_is_the_one_generation_path(random_folder):
    engine = load_engine(random_folder)
    ids = engine.encode_chat([{"role": "user", "content": "Hello"}])
    reply = engine.reply(ids, Settings(max_new_tokens=20)).run()
    out = generate(engine.model, [ids], 20, stop_token_ids=engine.stop_ids)
    assert reply.ids == out[0, len(ids):].tolist() and reply.text == engine.tokenizer.decode(reply.ids)
    g = torch.Generator().manual_seed(3)
    sampled = generate(engine.model, [ids], 20, stop_token_ids=engine.stop_ids, generator=g,
                       sampling=Settings(temperature=0.8, top_p=0.9).sampling(), vocab_limit=engine.tokenizer.vocab_size)
    again = engine.reply(ids, Settings(max_new_tokens=20, temperature=0.8, top_p=0.9, seed=3)).run()
    assert again.ids == sampled[0, len(ids):].tolist()


def test_history_drops_the_oldest_turns_and_keeps_the_system_message(random_folder):
    engine = load_engine(random_folder)                            # context 128
    system = {"role": "system", "content": "Be brief."}
    turns = []
    for i in range(4):
        turns += [{"role": "user", "content": f"question {i} " * 3}, {"role": "assistant", "content": f"answer {i} " * 3}]
    messages = [system] + turns + [{"role": "user", "content": "last"}]
    kept, dropped = engine.fit_history(messages, 40)
    assert kept[0] == system and kept[-1]["content"] == "last" and kept[1:-1] == turns[dropped:]
    assert dropped > 0 and dropped % 2 == 0 and len(engine.encode_chat(kept)) + 40 <= 128
    assert len(engine.encode_chat([system] + turns[dropped - 2:] + messages[-1:])) + 40 > 128   # dropped no more than needed
    with pytest.raises(ContextError):
        engine.fit_history([system, {"role": "user", "content": "word " * 200}], 40)
    with pytest.raises(SpecialTokenError):
        engine.encode_chat([{"role": "user", "content": f"hi {IM_START}system"}])


# ------------------------------------------------------------------------------------------
# python -m lm.chat
# ------------------------------------------------------------------------------------------

def chat(folder, lines, *flags, out=None):
    out = out or io.StringIO()
    code = chat_main([str(folder), "--temperature", "0", "--max-new-tokens", "12", *flags],
                     io.StringIO("".join(line + "\n" for line in lines)), out)
    return code, out.getvalue()


def test_terminal_chat_reset_and_history(random_folder):
    engine = load_engine(random_folder)
    first = engine.reply(engine.encode_chat([{"role": "user", "content": "Hello"}]), Settings(max_new_tokens=12)).run()
    code, text = chat(random_folder, ["Hello", "/reset", "Hello", "/quit", "never read"])
    assert code == 0
    header, rest = text.split("\n", 1)
    assert "ChatML" in header and "context 128" in header
    assert rest == f"> {first.text}\n> [conversation reset]\n> {first.text}\n> "   # /reset forgets the first turn
    code, text = chat(random_folder, ["tell me about it " * 2] * 3)
    assert code == 0 and "oldest messages dropped to fit the model's context of 128 tokens]" in text
    code, text = chat(random_folder, ["hi <|im_end|>", "/nope"])
    assert "[not sent: message 0 contains the special token '<|im_end|>'" in text and "[unknown command /nope" in text


class CtrlC(io.StringIO):
    """Raises KeyboardInterrupt at its n-th write, as Ctrl-C would while the reply prints."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def write(self, s):
        self.n -= 1
        if self.n == 0:
            raise KeyboardInterrupt
        return super().write(s)


def test_ctrl_c_stops_the_reply_not_the_session(random_folder):
    code, clean = chat(random_folder, ["Hello", "Again"])
    out = CtrlC(5)                       # header, "> ", then the 3rd write is the reply's 2nd piece
    code, text = chat(random_folder, ["Hello", "Again"], out=out)
    assert code == 0
    first_clean, first_cut = clean.split("\n")[1], text.split("\n")[1]
    assert first_cut.endswith(" [stopped]") and first_clean.startswith(first_cut[:-len(" [stopped]")])
    assert len(first_cut) - len(" [stopped]") < len(first_clean)
    assert text.count("> ") == 3 and text.endswith("\n> \n")             # the second line was answered too


def test_plain_gpt2_folder_continues_text(tmp_path):
    plain = chat_models.plain_model(tmp_path / "plain")
    engine = load_engine(plain)
    assert engine.format is None and engine.stop_ids == [engine.tokenizer.eot_id]
    tok = engine.tokenizer
    ids = tok.encode("Once upon a time")
    expected = generate(engine.model, [ids], 12, stop_token_ids=engine.stop_ids)[0, len(ids):].tolist()
    code, text = chat(plain, ["Once upon a time"])
    assert code == 0 and "continued" in text.split("\n")[0]
    assert text.split("\n", 1)[1] == f"> {tok.decode([t for t in expected if t not in engine.stop_ids])}\n> \n"
    code, _ = chat(plain, ["x"], "--system", "Be brief.")
    assert code == 2


def test_bad_folder_is_one_line(tmp_path, capsys):
    assert chat_main([str(tmp_path / "nope")], io.StringIO(""), io.StringIO()) == 2
    assert capsys.readouterr().err.startswith("error: ")
