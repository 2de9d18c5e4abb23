"""Label the abstracts of a data dir with local and/or hosted labellers: `python -m lm.labeling --help`.

    # offline, on the embedded toy data, with a GPT-2 folder (e.g. RUN/pretrained/news of run_all.py)
    python -m lm.labeling --out runs/labels --gpt2 runs/x/pretrained/news \\
        --labellers tfidf,gpt2_embed,lm_score,lm_generate

    # five hosted models on OpenRouter, as in the book (the key is read from $OPENROUTER_API_KEY)
    python -m lm.labeling --data-dir ../shared/data --out runs/or --labellers none \\
        --url https://openrouter.ai/api/v1 --api-key-env OPENROUTER_API_KEY \\
        --models meta-llama/llama-4-maverick,openai/gpt-4.1-nano,deepseek/deepseek-chat

Writes OUT/answers.jsonl (every answer as it arrives; run the same command again to resume),
OUT/labels.jsonl (`{"id", "qcode", "folded", "votes"}`: qcode is null without a majority, folded is
qcode or "Other" for labels with fewer than --min-docs documents) and OUT/summary.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lm.cli import add_dataclass_flags, dataclass_from_args
from lm.data.download import gpt2_folder
from lm.data.loaders import resolve_data_dir
from lm.errors import ConfigError, LMError
from lm.labeling.answers import AnswerCache
from lm.labeling.candidates import label_cosines
from lm.labeling.documents import load_corpus
from lm.labeling.ensemble import OTHER, fold_rare
from lm.labeling.hosted import ChatClient, EndpointConfig, HostedLabeller, key_from_env
from lm.labeling.label_corpus import (EMBEDDERS, GPT2_EMBEDDER, LOCAL, NEEDS_MODEL, label_corpus, local_labellers,
                                     make_embedder)
from lm.labeling.lm_generate import LMGenerator
from lm.models.auto import load_causal_lm
from lm.models.gpt2 import GPT2
from lm.tokenizers.chat import default_system_from_dir
from lm.tokenizers.gpt2 import GPT2Tokenizer
from lm.tokenizers.hf_json import tokenizer_from_dir
from lm.utils import atomic_open, choose_device, seed_everything, write_summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lm.labeling", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Label arXiv abstracts with IPTC leaves by an ensemble of labellers (the book's "
                    "document_classifier_with_LLMs_as_labelers).",
        epilog="hosted models: any OpenAI-compatible chat-completions endpoint. Give its URL with --url\n"
               "(e.g. https://openrouter.ai/api/v1 or http://127.0.0.1:8000/v1), the model names with\n"
               "--models, and the NAME of the environment variable that holds the API key with\n"
               "--api-key-env (e.g. `export OPENROUTER_API_KEY=...` then --api-key-env OPENROUTER_API_KEY).\n"
               "The key itself is never given on the command line, printed, logged or written to disk.\n"
               "Run the same command again to resume: answers already in OUT/answers.jsonl are not asked again.")
    p.add_argument("--data-dir", help="data folder with arxiv/abstracts.jsonl and iptc/mediatopic.tsv "
                                      "(default: $LM_DATA_DIR or the embedded data/)")
    p.add_argument("--out", required=True, help="output folder: answers.jsonl (the cache), labels.jsonl, summary.json")
    p.add_argument("--labellers", default="tfidf,gpt2_embed,lm_score,lm_generate",
                   help=f"comma-separated local labellers ({', '.join(LOCAL)}) or 'none' (default: all four)")
    p.add_argument("--gpt2", help="GPT-2 folder (Hugging Face layout + tokenizer) for gpt2_embed, lm_score, "
                                  "lm_generate and --candidates gpt2; or a hub name (gpt2) when online")
    p.add_argument("--candidates", default="tfidf", choices=EMBEDDERS,
                   help="embedding that picks each document's k candidate leaves (default tfidf: the better on "
                        "the toy data)")
    p.add_argument("--k", type=int, default=100, help="candidate leaves per document (the book: 100)")
    p.add_argument("--limit", type=int, help="label a random sample of this many documents (seed 42)")
    p.add_argument("--min-votes", type=int, help="votes a label needs (default: the book's labellers // 2 + 1)")
    p.add_argument("--min-docs", type=int, default=20,
                   help="labels with fewer documents are folded into 'Other' in labels.jsonl's `folded` (the book: 20; "
                        "0 folds nothing)")
    p.add_argument("--score-normalize", default="sum", choices=("sum", "mean", "pmi"),
                   help="how lm_score compares candidates' log-likelihoods (default sum)")
    p.add_argument("--template", default="book", choices=("book", "short"),
                   help="lm_generate's prompt: the book's, or a short one without instructions")
    p.add_argument("--chat-model", metavar="FOLDER",
                   help="also label with a local instruction-tuned model (a Hugging Face GPT-2 or Qwen2 folder, "
                        "e.g. Qwen2.5-0.5B-Instruct): the book's prompt as a ChatML user message, 3 attempts")
    p.add_argument("--url", help="OpenAI-compatible endpoint for hosted models, e.g. https://openrouter.ai/api/v1")
    p.add_argument("--models", help="comma-separated hosted model names (needs --url), e.g. openai/gpt-4.1-nano")
    p.add_argument("--api-key-env", metavar="VAR",
                   help="NAME of the environment variable holding the endpoint's API key (not the key itself)")
    add_dataclass_flags(p, EndpointConfig, skip=("url", "temperature", "max_tokens"))   # --timeout, --retries, ...
    p.add_argument("--attempts", type=int, default=3, help="requests per model and document until a valid ID (the book: 3)")
    p.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    p.add_argument("--seed", type=int, default=0, help="random seed (sampling in lm_generate's retries)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def hosted_labellers(a: argparse.Namespace, taxonomy) -> list:
    if not a.models:
        if a.url or a.api_key_env:
            raise ConfigError("--url/--api-key-env given without --models (the hosted model names)")
        return []
    if not a.url:
        raise ConfigError("--models needs --url (the endpoint, e.g. https://openrouter.ai/api/v1)")
    cfg = dataclass_from_args(EndpointConfig, a, url=a.url)
    client = ChatClient(cfg, key_from_env(a.api_key_env))
    return [HostedLabeller(client, m.strip(), taxonomy, attempts=a.attempts) for m in a.models.split(",") if m.strip()]


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        seed_everything(a.seed)
        data_dir = resolve_data_dir(a.data_dir)
        docs, taxonomy, truth = load_corpus(data_dir, a.limit)
        names = [] if a.labellers.strip() == "none" else [n.strip() for n in a.labellers.split(",") if n.strip()]
        model = tok = None
        if NEEDS_MODEL & set(names) or a.candidates == GPT2_EMBEDDER:
            if not a.gpt2:
                raise ConfigError(f"labellers {sorted(NEEDS_MODEL & set(names)) or ''} / --candidates gpt2 need "
                                  "--gpt2 FOLDER (a Hugging Face GPT-2 folder with its tokenizer)")
            folder = gpt2_folder(a.gpt2)
            model, tok = GPT2.from_pretrained(folder, device=choose_device(a.device)), GPT2Tokenizer.from_dir(folder)
        labellers = local_labellers(names, taxonomy, docs, model, tok, a.score_normalize, a.template, a.seed)
        if a.chat_model:
            folder = Path(a.chat_model).expanduser()
            chat = load_causal_lm(folder, device=choose_device(a.device))
            labellers.append(LMGenerator(chat, tokenizer_from_dir(folder), taxonomy, f"chat:{folder.name}",
                                         template=a.template, attempts=a.attempts, chat=True, seed=a.seed,
                                         system=default_system_from_dir(folder)))
        labellers += hosted_labellers(a, taxonomy)
        out = Path(a.out)
        with AnswerCache(out / "answers.jsonl") as cache:
            scores = label_cosines(make_embedder(a.candidates, model, tok), docs, taxonomy)   # (N, L)
            run = label_corpus(docs, taxonomy, labellers, scores, a.k, cache, truth=truth, min_votes=a.min_votes,
                               quiet=a.quiet)
    except LMError as e:
        print(f"python -m lm.labeling: error: {e}", file=sys.stderr)
        return 2
    labelled = {d: q for d, q in run.labels.items() if q is not None}
    folded, _, kept = fold_rare(labelled, {}, a.min_docs)
    with atomic_open(out / "labels.jsonl") as f:
        for d in docs:
            votes = {name: ans[d.id] for name, ans in run.answers.items()}
            rec = {"id": d.id, "qcode": run.labels[d.id], "folded": folded.get(d.id), "votes": votes}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    summary = dict(run.metrics, data_dir=str(data_dir), candidates=a.candidates, min_docs=a.min_docs,
                   classes_kept=len(kept), folded_share=round(sum(v == OTHER for v in folded.values()) /
                                                             max(len(folded), 1), 4),
                   labellers_used=[lab.name for lab in labellers])
    clients = {id(lab.client): lab.client for lab in labellers if isinstance(lab, HostedLabeller)}
    if clients:
        summary["hosted_requests"] = [dict(c.stats) for c in clients.values()]
    write_summary(out, summary)
    print(f"{sum(v is not None for v in run.labels.values())} of {len(docs)} documents labelled "
          f"(coverage {run.metrics['coverage']:.3f}, agreement {run.metrics['agreement']}, "
          f"kappa {run.metrics['kappa']}); labels in {out / 'labels.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
