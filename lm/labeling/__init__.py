"""Document labelling with language models (the book's document_classifier_with_LLMs_as_labelers).

No labelled data? Let language models label it. The book takes arXiv abstracts and the leaves of the
IPTC Media Topics taxonomy, shortlists 100 candidate leaves per abstract by embedding similarity,
asks five hosted LLMs to pick one ID each, keeps a label when 3 of 5 agree, folds rare labels
into "Other", and trains a classifier on the result. Read in this order:

    taxonomy.py     the leaves, their paths and definitions, the label text, the ID pattern
    documents.py    the abstracts (and, on the toy data, their true leaf)
    tfidf.py        sparse TF-IDF vectors (the baseline embedding)
    embeddings.py   mean-pooled GPT-2 hidden states (our model as an embedder)
    candidates.py   top-k leaves by cosine, recall of the truth at k
    prompt.py       the book's prompt, the last-match ID rule and its validation
    labeller.py     the interface `label(document, candidates) -> id or None`; nearest label
    lm_score.py     a local LM scoring each candidate's text (batched)
    lm_generate.py  a local LM writing the ID after the book's prompt (retries; compact form for short windows)
    instruct.py     the labelling model: our GPT-2 instruction-tuned on other labelled documents
    hosted.py       any OpenAI-compatible endpoint, standard library only (retries, key kept secret)
    answers.py      the answer store: every answer appended to JSONL as it arrives (resume after a crash)
    ensemble.py     majority vote (more than half), coverage, agreement, Cohen's kappa, rare labels -> "Other"
    ask_all.py      asking many labellers about a corpus (batched, threaded, stored answers skipped, progress)
    label_corpus.py candidates -> answers -> votes -> metrics (the vote vs the best single labeller),
                    shared by the stage and the CLI
    __main__.py     `python -m lm.labeling`: label any data dir with local and hosted labellers

Stage: `lm/stages/doc_labeling.py`.
"""
