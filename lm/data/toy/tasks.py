"""The toy world's task datasets: emotion tweets, instructions, grade-school maths, abstracts.

Each function returns the rows of one file of the embedded data (`lm.data.toy.build` writes them):
`emotion_split` (tweets with cue words and ~10 % label noise), `instruct_rows` (instructions with
checkable answers), `gsm8k_split` (worked arithmetic problems ending in `#### n`), `abstracts` and
`taxonomy_rows` (arXiv-like abstracts about leaf topics of an IPTC-like taxonomy). Only
`random.Random(seed)` instances are used, so the same seed gives the same rows everywhere.
"""
from __future__ import annotations

import random

from lm.data.loaders import EMOTION_LABELS
from lm.data.toy.world import (
    CAPITALS, DAYS, EMOTION_ADVERBS, EMOTION_CUES, EMOTION_REASONS, EMOTION_SHARES,
    EMOTION_TAILS, JOB, LEAVES, MIDDLE_DEFINITIONS, SEASONS, SPECIE, TASK_WORDS, TOP_TOPICS,
    TOWN, TOWNS, YEAR_NOW, World,
)
from lm.data.toy.text import SentenceWriter, a_or_an, capitalised, render_news


# --------------------------------------------------------------------------------------------
# Emotion: lowercase tweets with cue words, distractors and ~10 % label noise
# --------------------------------------------------------------------------------------------

def label_counts(n: int) -> dict[str, int]:
    """Exact counts per label for `n` rows, by largest remainder over EMOTION_SHARES."""
    raw = {lab: n * EMOTION_SHARES[lab] for lab in EMOTION_LABELS}
    counts = {lab: int(raw[lab]) for lab in EMOTION_LABELS}
    order = sorted(EMOTION_LABELS, key=lambda lab: (-(raw[lab] - counts[lab]), EMOTION_LABELS.index(lab)))
    for lab in order[: n - sum(counts.values())]:
        counts[lab] += 1
    return counts


def _tweet(r: random.Random, label: str) -> str:
    c = r.choice(EMOTION_CUES[label])
    adv, tail, why = r.choice(EMOTION_ADVERBS), r.choice(EMOTION_TAILS), r.choice(EMOTION_REASONS[label])
    other = r.choice([lab for lab in EMOTION_LABELS if lab != label])
    o = r.choice(EMOTION_CUES[other])
    u = r.random()
    if u < 0.25:   # a distractor: a cue of another label, negated or contrasted
        return r.choice((
            f"i thought i would be {o} but i feel {c} {tail}",
            f"i am not {o} {tail} i am just {adv} {c}",
            f"everyone thinks i am {o} but honestly i feel {adv} {c}",
            f"{r.choice(EMOTION_REASONS[other])} but i still feel {c} {tail}",
        ))
    return r.choice((
        f"i feel {c} {tail}",
        f"i feel {adv} {c} because {why}",
        f"im feeling {adv} {c} {tail}",
        f"i have been feeling {c} ever since {why}",
        f"{why} and i feel {adv} {c}",
        f"i woke up feeling {adv} {c} {tail}",
        f"i cant stop feeling {c} {tail}",
        f"ive been {adv} {c} {tail} because {why}",
    ))


def emotion_split(seed: int, n: int, noise: float) -> tuple[list[dict], int]:
    """`n` rows {"text", "label"} with class shares of the real data; returns (rows, flipped).

    Each label is replaced, with probability `noise`, by one of the other five labels chosen
    uniformly: the text still shows the true emotion, so the best reachable accuracy is
    1 - flipped / n. The noise has its own random stream, so `noise=0.0` gives the same texts
    with their clean labels.
    """
    r, flip = random.Random(seed), random.Random(seed + 1_000_000)   # texts and noise: separate streams
    labels = [lab for lab, k in label_counts(n).items() for _ in range(k)]
    r.shuffle(labels)
    rows, flipped = [], 0
    for lab in labels:
        text = _tweet(r, lab)
        if flip.random() < noise:
            lab = flip.choice([x for x in EMOTION_LABELS if x != lab])
            flipped += 1
        rows.append({"text": text, "label": lab})
    return rows, flipped


# --------------------------------------------------------------------------------------------
# Instruction / solution pairs with checkable answers
# --------------------------------------------------------------------------------------------

def _instruct(world: World, r: random.Random) -> tuple[str, str]:
    kind = r.randrange(14)
    a, b = r.randint(2, 99), r.randint(2, 99)
    w1 = r.choice(TASK_WORDS)
    if kind == 0:
        return f"What is {a} + {b}?", str(a + b)
    if kind == 1:
        a, b = max(a, b), min(a, b)
        return f"Subtract {b} from {a}.", str(a - b)
    if kind == 2:
        a, b = r.randint(2, 12), r.randint(2, 12)
        return f"What is {a} times {b}?", str(a * b)
    if kind == 3:
        return f'Reverse the word "{w1}".', w1[::-1]
    if kind == 4:
        return f'How many letters are in the word "{w1}"?', str(len(w1))
    if kind == 5:
        ch = r.choice(sorted(set(w1)))
        return f'How many times does the letter "{ch}" appear in "{w1}"?', str(w1.count(ch))
    if kind == 6:
        words = r.sample(TASK_WORDS, r.randint(3, 5))
        return f"Sort these words alphabetically: {', '.join(words)}.", ", ".join(sorted(words))
    if kind == 7:
        text = " ".join(r.sample(TASK_WORDS, r.randint(2, 4)))
        return f'Write "{text}" in capital letters.', text.upper()
    if kind == 8:
        s = SentenceWriter(world, r, news=False).s_intro()
        s = render_news(s)
        return f'How many words are in this sentence? "{s}"', str(len(s.split()))
    p = r.choice(world.people)
    t = TOWN[p.town]
    if kind == 9:
        return f"What is the capital of {t.region}?", f"The capital of {t.region} is {CAPITALS[t.region]}."
    if kind == 10:
        return f"What does {p.full} do for a living?", f"{p.full} is {a_or_an(p.job)} {p.job}."
    if kind == 11:
        return f"What pet does {p.full} have?", f"{p.full} has {a_or_an(p.colour)} {p.colour} {p.species} named {p.pet}."
    if kind == 12:
        return f"Where does {p.full} live?", f"{p.full} lives in {p.town}, on the {t.river}."
    return f"On which day is the market in {t.name} held?", f"The market in {t.name} is held every {t.market}."


def instruct_rows(world: World, seed: int, n: int) -> list[dict]:
    """`n` distinct {"instruction", "solution"} pairs."""
    r = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        ins, sol = _instruct(world, r)
        if ins not in seen:
            seen.add(ins)
            rows.append({"instruction": ins, "solution": sol})
    return rows


# --------------------------------------------------------------------------------------------
# GSM8K-style word problems: one or two operations, "<<a*b=c>>" annotations, "#### c"
# --------------------------------------------------------------------------------------------
# The operands are single digits (results up to 63) so a model of under a million parameters can
# learn the arithmetic from 1,400 worked solutions (greedy accuracy about a third after the SFT
# warm-up, two thirds with one of 8 samples), which leaves GRPO something to find. Real GSM8K is
# far harder: there a 0.5-1.5 B instruction-tuned model is the book's starting point.

def _step(a: int, op: str, b: int) -> tuple[str, int]:
    c = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
    return f"{a} {op} {b} = <<{a}{op}{b}={c}>>{c}", c


def _problem(world: World, r: random.Random) -> tuple[str, str]:
    kind = r.randrange(9)
    sellers = [q for q in world.people if q.job not in ("teacher", "healer")]
    p = r.choice(sellers if kind in (1, 4, 8) else world.people)   # people whose goods can be sold
    j, t = JOB[p.job], TOWN[p.town]
    g = r.choice(j.goods)
    P, S = p.first, capitalised(p.subj)
    if kind == 0:
        a, d = r.randint(2, 9), r.randint(2, 5)
        s, c = _step(a, "*", d)
        return (f"{P} is {a_or_an(j.name)} {j.name} in {t.name}. {S} {j.verbs[0]} {a} {g} every day. "
                f"How many {g} does {p.subj} {j.verbs[1]} in {d} days?",
                f"In {d} days {P} {j.verbs[0]} {s} {g}.\n#### {c}")
    if kind == 1:
        b, c2 = r.randint(2, 9), r.randint(2, 9)
        a = b + c2 + r.randint(1, 9)
        s1, used = _step(b, "+", c2)
        s2, left = _step(a, "-", used)
        return (f"{P} had {a} {g}. {S} sold {b} of them at the market in {t.name} and gave {c2} to "
                f"{p.poss} neighbour. How many {g} does {P} have left?",
                f"{P} sold and gave away {s1} {g}.\n{S} has {s2} {g} left.\n#### {left}")
    if kind == 2:
        price, q = r.randint(2, 9), r.randint(2, 5)
        s, c = _step(q, "*", price)
        return (f"At the market in {t.name}, one {t.unit} of {t.good} costs {price} coins. {P} buys {q} {t.unit}s. "
                f"How many coins does {p.subj} pay?", f"{P} pays {s} coins.\n#### {c}")
    if kind == 3:
        price, q = r.randint(2, 9), r.randint(2, 3)
        s1, cost = _step(q, "*", price)
        paid = cost + r.randint(1, 9)
        s2, change = _step(paid, "-", cost)
        return (f"One {t.unit} of {t.good} costs {price} coins in {t.name}. {P} buys {q} {t.unit}s and pays with "
                f"{paid} coins. How much change does {p.subj} get?",
                f"The {t.good} costs {s1} coins.\n{S} gets {s2} coins in change.\n#### {change}")
    if kind == 4:
        b, k = r.randint(2, 5), r.randint(2, 9)
        s, c = _step(b * k, "/", b)
        return (f"{P} has {b * k} {g} and packs them into boxes of {b}. How many boxes does {p.subj} fill?",
                f"{P} fills {s} boxes.\n#### {c}")
    if kind == 5:
        a, b = r.randint(2, 9), r.randint(2, 9)
        d1, d2 = r.sample(DAYS, 2)
        s, c = _step(a, "+", b)
        return (f"On {d1} {P} {j.verbs[2]} {a} {g}, and on {d2} {p.subj} {j.verbs[2]} {b} more. "
                f"How many {g} did {P} {j.verbs[1]} on the two days?",
                f"{P} {j.verbs[2]} {s} {g}.\n#### {c}")
    if kind == 6:
        a = r.randint(2, 9)
        s, c = _step(a, "*", 7)
        sp = SPECIE[p.species]
        return (f"{p.pet}, the {p.species} of {P}, eats {a} handfuls of {sp.food} every day. "
                f"How many handfuls does {p.pet} eat in a week?",
                f"A week has 7 days, so {p.pet} eats {s} handfuls.\n#### {c}")
    if kind == 7:
        q = world.mayors[t.name] if world.mayors[t.name] is not p else r.choice(world.people)
        a, b = r.randint(3, 9), r.randint(2, 9)
        s1, qa = _step(a, "+", b)
        s2, tot = _step(a, "+", qa)
        return (f"{P} has {a} coins. {q.first} has {b} coins more than {P}. How many coins do they have together?",
                f"{q.first} has {s1} coins.\nTogether they have {s2} coins.\n#### {tot}")
    a = 2 * r.randint(3, 9)
    s, c = _step(a, "/", 2)
    return (f"{P} {j.verbs[2]} {a} {g} and sold half of them. How many {g} are left?",
            f"{P} sold {s} {g}, so {s.split('>>')[-1]} are left.\n#### {c}")


def gsm8k_split(world: World, seed: int, n_train: int, n_test: int) -> tuple[list[dict], list[dict]]:
    """Distinct word problems; no test question appears in train."""
    r = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n_train + n_test:
        q, a = _problem(world, r)
        if q not in seen:
            seen.add(q)
            rows.append({"question": q, "answer": a})
    return rows[:n_train], rows[n_train:]


# --------------------------------------------------------------------------------------------
# Toy abstracts and their taxonomy
# --------------------------------------------------------------------------------------------

def taxonomy_codes() -> list[tuple[str, int, tuple, str, bool]]:
    """(qcode, level, path, definition, is_leaf) for every topic, in qcode order."""
    out = []
    for i, (top, definition) in enumerate(TOP_TOPICS, start=1):
        out.append((f"toytop:{i:02d}000000", 1, (top,), definition, False))
        mids = []
        for leaf in LEAVES:
            if leaf.path[0] == top and leaf.path[1] not in mids:
                mids.append(leaf.path[1])
        for j, mid in enumerate(mids, start=1):
            kids = [leaf for leaf in LEAVES if leaf.path[:2] == (top, mid) and len(leaf.path) == 3]
            if not kids:
                leaf = next(x for x in LEAVES if x.path == (top, mid))
                out.append((f"toytop:{i:02d}{j:02d}0000", 2, leaf.path, leaf.definition, True))
                continue
            out.append((f"toytop:{i:02d}{j:02d}0000", 2, (top, mid), MIDDLE_DEFINITIONS[mid], False))
            for k, leaf in enumerate(kids, start=1):
                out.append((f"toytop:{i:02d}{j:02d}{k:02d}00", 3, leaf.path, leaf.definition, True))
    return out


def taxonomy_rows() -> list[list[str]]:
    rows = [["qcode", "level", "path", "definition", "is_leaf"]]
    for code, level, path, definition, leaf in taxonomy_codes():
        rows.append([code, str(level), " > ".join(path), definition, "1" if leaf else "0"])
    return rows


# The labelling task is meant to need the vote (the book's lesson): each abstract is about one leaf,
# clear to a reader, but each kind of labeller has its own way to be misled.
#   - the topic sentence names the leaf in the words of its label text only sometimes
#     (ABSTRACT_LITERAL); otherwise by two of its keywords, which no label text uses, and the
#     level above it (shared with its siblings);
#   - with probability ABSTRACT_DISTRACTOR a contrast sentence names another leaf (a sibling when
#     there is one, ABSTRACT_SIBLING) in the words of *its* label text ("Unlike earlier work on ...");
#   - with probability ABSTRACT_BORROWED the evidence borrows two keywords of that other leaf
#     ("records of X and Y were also kept"), so keyword counts alone are close;
#   - every abstract has generic research words shared by all topics.
ABSTRACT_LITERAL = 0.6
ABSTRACT_DISTRACTOR = 0.4
ABSTRACT_SIBLING = 0.6
ABSTRACT_BORROWED = 0.3


def _confuser(r: random.Random, leaf, leaves: list):
    siblings = [x for x in leaves if x is not leaf and x.path[0] == leaf.path[0]]
    if siblings and r.random() < ABSTRACT_SIBLING:
        return r.choice(siblings)
    return r.choice([x for x in leaves if x is not leaf and x.path[0] != leaf.path[0]])


def _abstract(world: World, r: random.Random, leaf, leaves: list) -> tuple[str, str]:
    """(title, abstract) of one toy abstract about `leaf` (see the constants above)."""
    k1, k2, k3, k4 = r.sample(leaf.keywords, 4)
    other = _confuser(r, leaf, leaves)
    o1, o2 = r.sample(other.keywords, 2)
    t = r.choice(TOWNS)
    author = r.choice(world.people_of(t.name))
    y1 = r.randint(1120, 1140)
    y2 = y1 + r.randint(3, 12)
    title = r.choice((f"{capitalised(k1)} and {k2} in {t.name}", f"On {k1}, {k2} and {k3}",
                      f"A study of {k1} in {t.region}", f"{capitalised(k1)}: evidence from {t.name}",
                      f"New records of {k2} from {t.name}", f"{capitalised(k3)} in {t.region}, {y1} to {y2}"))
    topic = leaf.subject if r.random() < ABSTRACT_LITERAL else f"{k1} and {k2}, a question of {leaf.path[-2]}"
    sents = [
        r.choice((f"We study {topic} in {t.name} and the nearby towns of {t.region}.",
                  f"This paper examines {topic} across {t.region}.",
                  f"We report a survey of {topic}, carried out by {author.full} of {t.name}.")),
        f"Using {r.randint(12, 400)} records kept between {y1} and {y2}, we measure {k1} and {k3}.",
        r.choice((f"We find that the part played by {k3} is larger than expected, especially in {r.choice(SEASONS)}.",
                  f"Our results show a clear link between {k2} and {k4}.",
                  f"Surprisingly, {k4} changed little while {k3} doubled over the period.")),
    ]
    if r.random() < ABSTRACT_DISTRACTOR:
        sents.insert(r.choice((0, 1, len(sents))), r.choice((
            f"Unlike earlier work on {other.subject}, we look elsewhere.",
            f"This is not a study of {other.subject}, although the two are often confused.",
            f"Most surveys of {t.region} dealt with {other.subject} instead.")))
    if r.random() < ABSTRACT_BORROWED:
        sents.insert(len(sents) - 1, f"Records of {o1} and {o2} were also kept, but they tell us little here.")
    elif r.random() < 0.5:
        sents.append(r.choice((f"A simple model of {k4} explains most of the variation between towns.",
                               f"We close with open questions about {k2} and {k4}.")))
    return title, " ".join(sents)


def abstracts(world: World, seed: int, n: int, id_prefix: str = f"{YEAR_NOW}.") -> tuple[list[dict], list[dict]]:
    """`n` toy abstracts, each about one leaf topic (every leaf once first); also [{"id", "qcode"}]."""
    r = random.Random(seed)
    leaf_code = {path: code for code, _, path, _, is_leaf in taxonomy_codes() if is_leaf}
    leaves = list(LEAVES)
    rows, labels = [], []
    for i in range(n):
        leaf = leaves[i % len(leaves)] if i < len(leaves) else r.choice(leaves)
        title, text = _abstract(world, r, leaf, leaves)
        aid = f"{id_prefix}{i + 1:04d}"
        rows.append({"id": aid, "title": title, "abstract": text})
        labels.append({"id": aid, "qcode": leaf_code[leaf.path]})
    return rows, labels
