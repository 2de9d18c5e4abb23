"""The embedded toy data: an invented "toy world" and the datasets written from it into `data/`.

`world.py` invents the world (towns, people, jobs, species), `text.py` writes sentences about it
(Brown- and news-like corpora), `tasks.py` writes the task rows (emotion, instructions, word
problems, abstracts with a taxonomy), and `build.py` writes the whole `data/` tree:
`python -m lm.data.toy.build` rewrites it byte for byte.
"""
