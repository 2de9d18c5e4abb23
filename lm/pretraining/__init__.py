"""Layer 4, pretraining (book 3-5): language models trained from scratch on a data dir's news corpus.

An application of the engine (`lm.training`), as fine-tuning, GRPO and labelling are:

- `corpus.py`: a data dir's news corpus -> tokenizer -> examples (digits masked as the book does);
- `pretrain.py`: the chapter 3 RNN, the chapter 4 decoder and a small GPT-2 (saved as a Hugging
  Face folder for chapter 5), each with validation perplexity and the book's prompts continued;
- `__main__.py`: the command line for the chapter 3-4 models on any data dir
  (`python -m lm.pretraining --model rnn|transformer --data-dir DIR --out DIR`).
"""
