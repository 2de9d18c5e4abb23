"""Layer 0, data (book: every chapter's datasets): the one layout, its loaders, downloads, toy data.

- `loaders.py`: the layout of a data dir, the one line reader, typed loaders, the book's shuffle/split;
- `fetch.py`: the transport (streamed, checksummed, atomic fetch of one URL; safe tar reading);
- `download.py`: the book's datasets, GSM8K and GPT-2 files into a cache in the same layout;
- `toy/`: the deterministic generator of the embedded data in `data/`.
"""
