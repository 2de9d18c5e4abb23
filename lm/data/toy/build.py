"""Generate the embedded toy data in `data/`, deterministically, in the layout of the real data.

    python -m lm.data.toy.build               # rewrite the repository's data/
    python -m lm.data.toy.build --out /tmp/d  # write the same tree elsewhere

Every file is written from the facts of one toy world (`lm.data.toy.world`): towns on rivers,
80 people with a fixed home town, job and pet, market days, weather. Because the facts never
change, words several positions back predict what comes next ("Dorrit Nutley , the brewer
from Elmford , had a spotted goat named Bramble ."): that is what lets models with more context
win. Number agreement across relative clauses ("The boatmen of Gullhaven , who row barges , talk
about their ...")
and "because ... therefore" sentences add more such dependencies.

The sentences come from `lm.data.toy.text` (brown/, news/), the task rows from `lm.data.toy.tasks`
(emotion/, instruct/, gsm8k/, arxiv/, iptc/); this module puts them together, writes data/README.md
and the files.

Determinism: only `random.Random(seed)` instances, tuples in a fixed order, integers (no float
formatting), "\\n" line endings, UTF-8 bytes. The same seed gives byte-identical files on every
platform; `tests/data/test_embedded.py` regenerates the tree and compares it with data/.
"""
from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

from lm.data.loaders import EMBEDDED_DIR, EMOTION_LABELS
from lm.data.toy.world import CAPITALS, JOBS, SPECIES, TOWNS, YEAR_NOW, World, build_world
from lm.data.toy.tasks import abstracts, emotion_split, gsm8k_split, instruct_rows, taxonomy_rows
from lm.data.toy.text import lm_corpus
from lm.utils import atomic_write_bytes

SEED = 2024  # the one seed behind every file in data/
SPECIES_NAMES = [s.name for s in SPECIES]


# --------------------------------------------------------------------------------------------
# data/README.md, written from the world and the generated files
# --------------------------------------------------------------------------------------------

# Word-level perplexity of interpolated absolute-discounting n-gram models (d = 0.75, add-one
# unigram at the bottom; tokens: lowercased runs of [a-z0-9] or single punctuation marks, <s> and
# </s> around each line). news: train -> valid; brown: first 90 % of tokens -> last 10 %.
# Measured once with a throwaway script; tests/data/test_embedded.py recomputes and checks them.
NGRAM_PERPLEXITY = {"news": {1: 184.73, 2: 7.69, 3: 3.26}, "brown": {1: 179.45, 2: 8.44, 3: 3.83}}

# The same news tokens, a causal transformer seeing the last 1 or 30 tokens (measured once on a GPU).
TRANSFORMER_PERPLEXITY = {1: 7.68, 30: 2.02}

_FILE_NOTES = (  # (path, note), in the order of the README table
    ("brown/brown.txt", "toy stories, one sentence per line, tokens separated by spaces (Brown style)"),
    ("news/train.txt", "toy news, one raw sentence per line, digits kept (prices, years, counts)"),
    ("news/valid.txt", "same distribution, other seed"),
    ("news/test.txt", "same distribution, other seed"),
    ("emotion/train.jsonl", '`{"text", "label"}`, lowercase tweet-like sentences, 6 labels'),
    ("emotion/valid.jsonl", "same, other seed"),
    ("emotion/test.jsonl", "same, other seed"),
    ("emotion/meta.json", "label noise actually applied and best reachable accuracy per split (loaders ignore it)"),
    ("instruct/instruct.jsonl", '`{"instruction", "solution"}` with checkable answers'),
    ("gsm8k/train.jsonl", '`{"question", "answer"}`, worked steps with `<<a*b=c>>` and a final `#### n`'),
    ("gsm8k/test.jsonl", "same, no question shared with train"),
    ("arxiv/abstracts.jsonl", '`{"id", "title", "abstract"}`, 3-6 sentences, each about one leaf topic, with distractors'),
    ("arxiv/labels.jsonl", '`{"id", "qcode"}`: the true leaf topic of each abstract (loaders ignore it)'),
    ("arxiv/instruct.jsonl", '`{"id", "title", "abstract", "qcode"}`: other labelled abstracts (other seed) to instruction-tune the labelling model'),
    ("iptc/mediatopic.tsv", "`qcode level path definition is_leaf`, 8 top topics, 30 leaves (levels 1-3)"),
)


# Measured on this data by the doc_labeling stage (quick, seed 0) and written into the README by
# hand: the labellers' answers depend on trained models, which the generator does not run.
MEASURED_DIFFICULTY = (
    ("TF-IDF nearest label (word overlap with the label texts)", "1.000", "0.748"),
    ("the labelling model scoring each candidate's label text (`lm_score`)", "1.000", "0.783"),
    ("the labelling model writing the ID after the book's prompt (`lm_generate`)", "0.943", "0.725"),
    ("the vote, 2 of the 3 (more than half): documents labelled, accuracy of their labels", "0.940", "0.886"),
)
MEASURED_NOTE = ("Every labeller errs on its own documents, so the vote's labels are more accurate than any "
                 "single labeller's, also on the same 376 documents (best single: 0.811); the true leaf is "
                 "among the 3 TF-IDF candidates for 0.970 of the abstracts. The labelling model is the small "
                 "GPT-2 instruction-tuned on `arxiv/instruct.jsonl` (`lm.labeling.instruct`).")


def readme(world: World, files: dict[str, str], meta: dict) -> str:
    """The text of data/README.md."""
    out = ["# Embedded toy data", "",
           "Written by `python -m lm.data.toy.build` (seed %d) from an invented toy world; do not edit by" % SEED,
           "hand. `tests/data/test_embedded.py` regenerates the tree and checks it is byte-identical to this",
           "folder. The layout is that of the real data (`--data-dir ../shared/data`), so the two swap.", "",
           "| file | lines | words | bytes | what |", "|---|---:|---:|---:|---|"]
    for rel, note in _FILE_NOTES:
        text = files[rel]
        out.append(f"| `{rel}` | {text.count(chr(10)):,} | {len(text.split()):,} | {len(text.encode()):,} | {note} |")
    total = sum(len(t.encode()) for t in files.values())
    out += ["", f"Total without this README: {total:,} bytes.", "",
            "## The toy world", "",
            "Four regions, each with a capital; sixteen towns, each on a river, known for one good and",
            "holding its market on one day of the week:", "",
            "| town | region | river | known for | market day | mayor |", "|---|---|---|---|---|---|"]
    for t in TOWNS:
        cap = " (capital)" if CAPITALS[t.region] == t.name else ""
        out.append(f"| {t.name}{cap} | {t.region} | {t.river} | {t.good} (by the {t.unit}) | {t.market} | {world.mayors[t.name].full} |")
    out += ["", f"Sixteen jobs ({', '.join(j.name for j in JOBS)}), each with its verb and goods",
            f"(a baker bakes loaves, pies, ...). {len(SPECIES_NAMES)} kinds of animal ({', '.join(SPECIES_NAMES)}).",
            "", f"{len(world.people)} people, five per town; each has one home town, one job and one pet, the",
            "same in every file (the corpora, the instructions, the word problems):", "",
            "| person | town | job | pet |", "|---|---|---|---|"]
    for p in sorted(world.people, key=lambda q: (q.town, q.last, q.first)):
        out.append(f"| {p.full} ({p.subj}) | {p.town} | {p.job} | {p.colour} {p.species} {p.pet} |")
    p = world.people[0]
    out += ["", "## What makes context pay", "",
            "- Facts: after a person's name, the job, town, pet and pronoun are fixed (`%s , the" % p.full,
            f"  {p.job} from {p.town} , ... {p.poss} {p.species} {p.pet}`); after a town, its river, good and market day.",
            "- Agreement across a relative clause: `The boatmen of Gullhaven , who row barges , talk about",
            "  their rafts` against `The boatman of Gullhaven , who rows barges , talks about her rafts`.",
            "- `Because it rained for three days in Elmford , the Tamsel rose over its banks , and therefore",
            "  the boatmen of Elmford kept their boats tied up at the quay .` (town -> river, cause -> who).",
            "- News: `rose ... up from` against `fell ... down from` with the numbers ordered to match;",
            "  scores `4-1` with the winner named first.",
            "- Word problems (`gsm8k/`): nine templates of one or two operations on single-digit operands",
            "  (results up to 63), sized so a sub-million-parameter model can learn them and GRPO can improve it.", "",
            "Word-level perplexity of interpolated absolute-discounting n-gram models (d = 0.75; lowercased",
            "tokens `[a-z0-9]+` or one punctuation mark; `<s>`, `</s>` around each line). news: train ->",
            "valid; brown: first 90 % of tokens -> last 10 % (the book's split):", "",
            "| corpus | n=1 | n=2 | n=3 |", "|---|---:|---:|---:|"]
    for corpus, ppl in NGRAM_PERPLEXITY.items():
        out.append(f"| {corpus} | {ppl[1]:.2f} | {ppl[2]:.2f} | {ppl[3]:.2f} |")
    out += ["", "A small causal transformer on the same news tokens (2 layers, width 128, 4 heads, AdamW 3e-3,",
            "3000 steps of 128 windows; measured once, not by the tests) reached valid perplexity "
            f"{TRANSFORMER_PERPLEXITY[1]:.2f}",
            f"with a context of 1 token (a bigram model) and {TRANSFORMER_PERPLEXITY[30]:.2f} with a context of 30 tokens."]
    out += ["", "## Emotion labels", "",
            "Every sentence carries a cue word of its true label; a quarter also carries a cue of another",
            "label (negated or contrasted: `i am not angry today i am just sad`). Then each label is",
            f"replaced, with probability {meta['noise_target']}, by one of the other five chosen uniformly. The text",
            "still shows the true emotion, so the best reachable accuracy is the share of labels not flipped:", "",
            "| split | rows | flipped | noise rate | best reachable accuracy |", "|---|---:|---:|---:|---:|"]
    for split, m in meta["splits"].items():
        out.append(f"| {split} | {m['rows']} | {m['flipped']} | {m['noise_rate']:.4f} | {m['best_accuracy']:.4f} |")
    out += ["", "Label counts after noise: " + "; ".join(
        f"{split} " + ", ".join(f"{k} {v}" for k, v in m["label_counts"].items()) for split, m in meta["splits"].items()) + ".",
            "", "## Abstracts and topics", "",
            "`iptc/mediatopic.tsv` is a small taxonomy in the IPTC file's format (codes `toytop:...`, ours).",
            "`arxiv/labels.jsonl` holds each abstract's true leaf, so a labelling method can be scored, and",
            "`arxiv/instruct.jsonl` holds other labelled abstracts (another seed, none of the 400) to",
            "instruction-tune the labelling model. Each abstract is about one leaf and says so to a reader,",
            "but not always in words a label text shares (`lm.data.toy.tasks`): in 40 % the topic is named",
            "by two of the leaf's keywords and the level above it rather than in the words of the label;",
            "40 % name another leaf (a sibling 60 % of the time) in a contrast (\"Unlike earlier work on",
            "...\"); 30 % also mention two keywords of that other leaf (\"... tell us little here\").", "",
            "Measured difficulty (`python run_all.py --only doc_labeling`, quick, seed 0; accuracy against",
            "the true leaves of the 400 abstracts):", "",
            "| labeller | valid answers | accuracy |", "|---|---:|---:|"]
    out += [f"| {name} | {cov} | {acc} |" for name, cov, acc in MEASURED_DIFFICULTY]
    out += [""] + textwrap.wrap(MEASURED_NOTE, 100) + [""]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# The whole tree
# --------------------------------------------------------------------------------------------

def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _lines(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def generate(seed: int = SEED) -> dict[str, str]:
    """Every file of the data tree as {relative path: text}; nothing is written here."""
    world = build_world(seed)
    files: dict[str, str] = {}
    files["brown/brown.txt"] = _lines(lm_corpus(world, seed + 1, 240_000, news=False))
    for k, (split, n_words) in enumerate((("train", 200_000), ("valid", 15_000), ("test", 15_000))):
        files[f"news/{split}.txt"] = _lines(lm_corpus(world, seed + 10 + k, n_words, news=True))

    meta = {"labels": list(EMOTION_LABELS), "noise_target": 0.1, "splits": {}}
    for k, (split, n) in enumerate((("train", 4000), ("valid", 500), ("test", 500))):
        rows, flipped = emotion_split(seed + 20 + k, n, noise=0.1)
        files[f"emotion/{split}.jsonl"] = _jsonl(rows)
        meta["splits"][split] = {
            "rows": n, "flipped": flipped, "noise_rate": round(flipped / n, 4),
            "best_accuracy": round(1 - flipped / n, 4),
            "label_counts": {lab: sum(row["label"] == lab for row in rows) for lab in EMOTION_LABELS}}
    files["emotion/meta.json"] = json.dumps(meta, indent=2) + "\n"

    files["instruct/instruct.jsonl"] = _jsonl(instruct_rows(world, seed + 30, 1000))
    train, test = gsm8k_split(world, seed + 40, 1500, 200)
    files["gsm8k/train.jsonl"], files["gsm8k/test.jsonl"] = _jsonl(train), _jsonl(test)
    rows, labels = abstracts(world, seed + 50, 400)
    files["arxiv/abstracts.jsonl"], files["arxiv/labels.jsonl"] = _jsonl(rows), _jsonl(labels)
    rows, labels = abstracts(world, seed + 51, 2000, id_prefix=f"{YEAR_NOW - 1}.")   # other documents, other seed
    files["arxiv/instruct.jsonl"] = _jsonl([{**r, "qcode": x["qcode"]} for r, x in zip(rows, labels)])
    files["iptc/mediatopic.tsv"] = _lines(["\t".join(row) for row in taxonomy_rows()])
    files["README.md"] = readme(world, files, meta)
    return files


def write_tree(out_dir: str | Path, seed: int = SEED) -> dict[str, str]:
    """Generate every file and write it under `out_dir` (atomically; UTF-8 bytes, so "\\n" stays "\\n")."""
    files = generate(seed)
    for rel in sorted(files):
        atomic_write_bytes(Path(out_dir) / rel, files[rel].encode("utf-8"))
    return files


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lm.data.toy.build",
                                 description="Write the embedded toy-world data tree (brown/, news/, emotion/, instruct/, "
                                             "gsm8k/, arxiv/, iptc/ and README.md), the same layout as the real data.")
    ap.add_argument("--out", default=str(EMBEDDED_DIR),
                    help="folder to write the tree into (default: the repository's data/)")
    ap.add_argument("--seed", type=int, default=SEED,
                    help=f"random seed (default {SEED}, the one behind the committed data/)")
    args = ap.parse_args(argv)
    files = write_tree(args.out, args.seed)
    total = sum(len(t.encode("utf-8")) for t in files.values())
    print(f"wrote {len(files)} files ({total / 1e6:.2f} MB) to {args.out}")


if __name__ == "__main__":
    main()
