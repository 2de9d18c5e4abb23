"""Layer 2, neural language models (book 3, 4 and 5). Each file starts with its config dataclass.

- `rnn.py`: the Elman RNN language model (chapter 3);
- `transformer.py`: the decoder transformer with RMSNorm and RoPE (chapter 4); also the KV cache
  and the attention mask builder every attention model here uses;
- `gpt2.py`: GPT-2 (chapter 5), loading and saving Hugging Face folders, the classifier head (5.6);
- `fast_linear.py`: an optional faster CPU inference kernel for linear layers.

Every model implements the one generation protocol of `lm/inference/generate.py`:
`forward(input_ids, attention_mask=None, position_ids=None, cache=None)` and `new_cache(batch, max_len)`.
"""
