"""Layer 3, training (book 3-5): one engine trains every neural model here.

- `engine.py`: `train` and `TrainConfig`: AdamW, warm-up + cosine, clipping, accumulation,
  evaluation, atomic checkpoints and exact resume;
- `batches.py`: token data -> examples -> padded batches (`SentenceExamples`, `PackedExamples`).

Pretraining language models with it (the news corpus, the book's RNN and decoder, a small GPT-2)
is an application, one layer up: `lm.pretraining`.
"""
