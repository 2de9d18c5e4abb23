"""Layer 1, tokenizers (book 2.3 and 5): text -> token ids -> text. Knows nothing of models.

- `bpe.py`: the book's word-level byte-pair encoding (`BPETokenizer`) and its reference trainer;
- `bpe_fast.py`: the fast trainer (same merges, ~300x faster), tested equal to the reference;
- `gpt2.py`: GPT-2's byte-level BPE (`GPT2Tokenizer`): bytes -> printable characters, ranked merges;
- `pretokenize.py` / `pretokenize_fast.py`: GPT-2's split pattern with the standard library, literal
  and fast, tested equal.
- `pretokenize_qwen2.py`: Qwen2's split pattern (digits one at a time), reference and fast;
- `hf_json.py`: Hugging Face tokenizer files (tokenizer.json; vocab.json + merges.txt with
  tokenizer_config.json) -> `GPT2Tokenizer`; `tokenizer_from_dir(folder)`;
- `chat.py`: Qwen's ChatML chat template as a Python function.
"""
