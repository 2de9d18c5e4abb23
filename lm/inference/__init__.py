"""Layer 3, inference (book 5.4): the one generation path and the sampling methods.

- `generate.py`: `generate` for every neural LM here (cache, left-padded batches, stops, streaming);
- `sampling.py`: temperature, top-k, top-p, penalties: the book's NumPy code and batched torch processors.
"""
