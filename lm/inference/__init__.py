"""Layer 3, inference (book 5.4): the one generation path and the sampling methods.

- `generate.py`: `generate` for every neural LM here (cache, left-padded batches, stops, streaming);
- `stops.py`: where a generated answer ends (cut at the stop token or string) and its text;
- `complete.py`: prompts -> answers (batch, generate, cut, decode), in eval mode: every caller that
  wants text back (SFT evaluation, the warm-up, the book's samples, the labeller);
- `engine.py`: one reply at a time, streamed, for `lm.chat` and `lm.serve`;
- `sampling.py`: temperature, top-k, top-p, penalties: the book's NumPy code and batched torch processors.
"""
