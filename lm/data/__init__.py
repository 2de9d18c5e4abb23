"""Data layer: the one layout, typed loaders, the embedded toy-world generator and downloads.

    from lm.data import resolve_data_dir, load_split, DataError
"""
from lm.data.loaders import (
    EMBEDDED_DIR, EMOTION_LABELS, LAYOUT, OPTIONAL, Abstract, DataError, EmotionExample,
    GSM8KExample, InstructExample, Topic, book_shuffle, book_split, data_file, load_abstracts,
    load_emotion, load_gsm8k, load_instruct, load_iptc, load_split, optional_file, read_jsonl,
    read_lines, read_text, resolve_data_dir,
)

__all__ = [
    "EMBEDDED_DIR", "EMOTION_LABELS", "LAYOUT", "OPTIONAL", "Abstract", "DataError", "EmotionExample",
    "GSM8KExample", "InstructExample", "Topic", "book_shuffle", "book_split", "data_file", "load_abstracts",
    "load_emotion", "load_gsm8k", "load_instruct", "load_iptc", "load_split", "optional_file", "read_jsonl",
    "read_lines", "read_text", "resolve_data_dir",
]
