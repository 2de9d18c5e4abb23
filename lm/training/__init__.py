"""Layer 3, training (book 3-5): one engine trains every neural model here.

- `engine.py`: `train` and `TrainConfig`: AdamW, warm-up + cosine, clipping, accumulation,
  evaluation, atomic checkpoints and exact resume;
- `batches.py`: token data -> examples -> padded batches (`SentenceExamples`, `PackedExamples`);
- `corpus.py`: a data dir's news corpus -> tokenizer -> examples.

Pretraining language models with it (the book's RNN, decoder and a small GPT-2) is an application,
one layer up: `lm.pretraining`.
"""
