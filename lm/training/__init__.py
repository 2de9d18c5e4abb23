"""Layer 3, training (book 3-5): one engine trains every neural model here.

- `engine.py`: `train` and `TrainConfig`: AdamW, warm-up + cosine, clipping, accumulation,
  evaluation, atomic checkpoints and exact resume;
- `batches.py`: token data -> examples -> padded batches (`SentenceExamples`, `PackedExamples`);
- `corpus.py`: a data dir's news corpus -> tokenizer -> examples;
- `pretrain.py`: language models from scratch: the chapter 3 RNN, the chapter 4 decoder, a small GPT-2.
"""
