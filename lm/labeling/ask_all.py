"""Asking a set of labellers about a corpus: stored answers first, the rest asked, each saved at once.

    answers = ask_all(labellers, docs, candidates, cache)    # {labeller: {doc id: qcode or None}}

For every labeller, the documents it already answered (for the same candidates) come from the
`AnswerCache`; only the others are asked. Local labellers (`threads == 0`) run one after another
in this thread through their batched `label_many`; network-bound ones (hosted models) run
together in a thread pool, so five models on one endpoint are asked in parallel as in the book,
each endpoint holding its own limit on requests in flight. Every answer goes to the cache the
moment it arrives, so an interrupted run (crash, Ctrl-C) resumes where it stopped. One progress
bar counts answers over all labellers, with rate and ETA (`lm.utils.Progress`).
"""
from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Sequence

from lm.data.loaders import Abstract
from lm.errors import ConfigError
from lm.labeling.answers import AnswerCache
from lm.labeling.labeller import Labeller
from lm.utils import Progress


def ask_all(labellers: Sequence[Labeller], docs: Sequence[Abstract], candidates: Sequence[Sequence[str]],
            cache: AnswerCache, quiet: bool | None = None, desc: str = "labelling",
            seconds: dict[str, float] | None = None) -> dict[str, dict[str, str | None]]:
    """Every labeller's answer for every document (from the cache where it has them).

    `seconds`, if given, receives the time spent asking each local labeller, and "pooled" for the
    threaded ones together.
    """
    names = [lab.name for lab in labellers]
    if len(set(names)) != len(names):
        raise ConfigError(f"labeller names must differ (they key the cache), got {names}")
    if len(docs) != len(candidates):
        raise ConfigError(f"{len(docs)} documents but {len(candidates)} candidate lists")
    todo = {lab.name: [i for i, d in enumerate(docs) if not cache.get(lab.name, d.id, candidates[i])[0]]
            for lab in labellers}
    bar = Progress(total=sum(map(len, todo.values())), desc=desc, unit="answer", quiet=quiet)

    def save(lab: Labeller, i: int, answer: str | None) -> None:
        cache.put(lab.name, docs[i].id, candidates[i], answer)
        bar.update(1)

    for lab in labellers:                       # local models: batched, one at a time
        if lab.threads == 0 and todo[lab.name]:
            idx, start = todo[lab.name], time.perf_counter()
            for j, answer in lab.label_many([docs[i] for i in idx], [candidates[i] for i in idx]):
                save(lab, idx[j], answer)
            if seconds is not None:
                seconds[lab.name] = round(time.perf_counter() - start, 2)
    pooled = [(lab, i) for lab in labellers if lab.threads > 0 for i in todo[lab.name]]
    if pooled:                                  # hosted models: all together, in threads
        workers, start = max(lab.threads for lab in labellers if lab.threads > 0), time.perf_counter()
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="labeller")
        try:
            pending = {pool.submit(lab.label, docs[i], candidates[i]): (lab, i) for lab, i in pooled}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    lab, i = pending.pop(fut)
                    save(lab, i, fut.result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if seconds is not None:
            seconds["pooled"] = round(time.perf_counter() - start, 2)
    bar.close()
    return {lab.name: {d.id: cache.get(lab.name, d.id, candidates[i])[1] for i, d in enumerate(docs)}
            for lab in labellers}
