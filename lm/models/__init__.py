"""Layer 2, neural language models (book 3, 4 and 5). Each file starts with its config dataclass.

- `rnn.py`: the Elman RNN language model (chapter 3);
- `transformer.py`: the decoder transformer with RMSNorm and RoPE (chapter 4);
- `cache.py`: the KV cache every attention model here uses (it advances itself);
- `masks.py`: the attention mask builder, position ids and last-token index they share;
- `gpt2.py`: GPT-2 (chapter 5), loading and saving Hugging Face folders, the classifier head (5.6);
- `qwen2.py`: Qwen2 / Qwen2.5 (the book's GRPO models): grouped-query attention, SwiGLU,
  rotate-half RoPE, tied or untied head, Hugging Face folders, the classifier head; its
  configuration (config.json as transformers reads it) in `qwen2_config.py`;
- `pretrained.py`: what every family shares, written once: its config's base (`HFConfig`), loading,
  checking and saving Hugging Face folders (`PretrainedModel`), the two heads (`CausalLM`,
  `SequenceClassifier`);
- `auto.py`: `load_causal_lm(folder)`, the family read from config.json's model_type;
- `fast_linear.py`: an optional faster CPU inference kernel for linear layers.

Every language model implements the one generation protocol, `lm.inference.protocol.GenerationModel`:
`forward(input_ids, attention_mask=None, position_ids=None, cache=None, last_only=False)` and
`new_cache(batch, max_len)`.
"""
