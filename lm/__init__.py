"""lm: the programs of The Hundred-Page Language Models Book, rebuilt in plain PyTorch and NumPy.

The package mirrors the book's table of contents; see README.md for the chapter map.
"""
__version__ = "0.1.0"
