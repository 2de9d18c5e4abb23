"""Layer 2, count language models (book 2.5).

- `counts.py`: `NGramCounts`, n-gram counts in flat NumPy arrays (a trie), the book's tokenizer,
  and the safe `.npz` file format;
- `backoff.py`: the book's backoff model (`CountLM`) and its literal dict-of-dicts code
  (`BookReferenceLM`), tested equal;
- `kneser_ney.py`: interpolated modified Kneser-Ney (`KneserNeyLM`), a proper distribution.
"""
