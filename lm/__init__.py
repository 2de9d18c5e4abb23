"""lm: the programs of The Hundred-Page Language Models Book, rebuilt in plain PyTorch and NumPy.

The package mirrors the book's table of contents, one folder per topic; imports point down only:

    errors.py, utils.py, data/, basics/     layer 0: base (chapter 1, every dataset)
    tokenizers/                              layer 1: 2.3, 5
    ngram/, models/, checkpoints/            layer 2: 2.5, 3, 4, 5
    training/, inference/                    layer 3: 3-5.4
    finetune/, rl/, labeling/                layer 4: 5.3-5.6, GRPO, labelling
    stages/                                  layer 5: one module per run_all.py stage (+ preflight.py)
    report.py, plots.py                      layer 6: a run's report.md and its pictures

README.md has the chapter map (book section -> module -> run_all.py stage -> test).
"""
__version__ = "0.1.0"
