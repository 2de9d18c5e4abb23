"""Generate the embedded toy data in `data/`, deterministically, in the layout of the real data.

    python -m lm.data.embedded               # rewrite the repository's data/
    python -m lm.data.embedded --out /tmp/d  # write the same tree elsewhere

Every file is written from the facts of one toy world (`lm.data.toyworld`): towns on rivers,
80 people with a fixed home town, job and pet, market days, weather. Because the facts never
change, words several positions back predict what comes next ("Dorrit Nutley , the brewer
from Elmford , had a spotted goat named Bramble ."): that is what lets models with more context
win. Number agreement across relative clauses ("The boatmen of Gullhaven , who row barges , talk
about their ...")
and "because ... therefore" sentences add more such dependencies.

Determinism: only `random.Random(seed)` instances, tuples in a fixed order, integers (no float
formatting), "\\n" line endings, UTF-8 bytes. The same seed gives byte-identical files on every
platform; `tests/test_embedded.py` regenerates the tree and compares it with data/.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from lm.data.loaders import EMBEDDED_DIR, EMOTION_LABELS
from lm.data.toyworld import (
    CAPITALS, DAYS, EMOTION_ADVERBS, EMOTION_CUES, EMOTION_REASONS, EMOTION_SHARES, EMOTION_TAILS,
    GOOD_ADJECTIVES, JOB, JOBS, LEAVES, MIDDLE_DEFINITIONS, MONTHS, NUMBER_WORDS, OPENERS,
    SAY_ADVERBS, SEASONS, SOURCES, SPECIE, SPECIES, TASK_WORDS, TOP_TOPICS, TOWN, TOWNS, WEATHER,
    YEAR_NOW, Person, World, build_world,
)
from lm.utils import atomic_write_bytes

SEED = 2024  # the one seed behind every file in data/
SPECIES_NAMES = [s.name for s in SPECIES]
BUILDINGS = ("bakery", "mill", "forge", "kiln", "workshop", "shop", "school", "infirmary", "brewery")


def _a(word: str) -> str:
    """The indefinite article for `word`: 'an owl', 'a goat'."""
    return "an" if word[0] in "aeiou" else "a"


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


# --------------------------------------------------------------------------------------------
# The language-model corpora: one sentence per line
# --------------------------------------------------------------------------------------------

class SentenceWriter:
    """Writes sentences about the world as space-separated tokens (Brown style).

    `news=True` writes numbers as digits (prices, years, counts) and picks the news templates;
    `render_news` then turns the tokens into raw text.
    """

    def __init__(self, world: World, rng: random.Random, news: bool):
        self.w, self.r, self.news = world, rng, news
        self.templates = self.NEWS if news else self.BROWN

    # helpers -------------------------------------------------------------------------------
    def person(self) -> Person:
        return self.r.choice(self.w.people)

    def neighbour(self, p: Person) -> Person:
        return self.r.choice([q for q in self.w.people_of(p.town) if q is not p])

    def num(self, lo: int, hi: int) -> str:
        n = self.r.randint(lo, hi)
        return str(n) if self.news or n > 12 else NUMBER_WORDS[n]

    def goods(self, job: str) -> str:
        """One of the job's goods, sometimes with an adjective: 'pies', 'fresh pies'."""
        g = self.r.choice(JOB[job].goods)
        return f"{self.r.choice(GOOD_ADJECTIVES)} {g}" if self.r.random() < 0.3 else g

    def source(self) -> str:
        return self.r.choice(SOURCES)

    def opened(self, s: str) -> str:
        """Sometimes put a time phrase before a past-tense sentence that starts with a name."""
        if self.r.random() < 0.6:
            return s
        opener = self.r.choice(OPENERS).format(day=self.r.choice(DAYS), month=self.r.choice(MONTHS),
                                               year=self.r.randint(1120, YEAR_NOW))
        return f"{opener} , {s}"

    def sentence(self) -> str:
        return getattr(self, self.r.choice(self.templates))()

    # sentences shared by both corpora --------------------------------------------------------
    def s_weather(self) -> str:
        wt, t = self.r.choice(WEATHER), self.r.choice(TOWNS)
        n = self.num(2, 9)
        cause = wt.cause.format(n=n, town=t.name)
        effect = wt.effect.format(river=t.river, town=t.name, capital=CAPITALS[t.region])
        return f"Because {cause} , {effect} , and therefore the {JOB[wt.job].plural} of {t.name} {wt.outcome} ."

    def s_agreement(self) -> str:
        p = self.person()
        j = JOB[p.job]
        g1, g2 = self.r.sample(j.goods, 2)
        day = TOWN[p.town].market
        act = self.r.choice((("talks", "talk"), ("boasts", "boast"), ("thinks", "think"), ("worries", "worry")))
        if self.r.random() < 0.5:   # singular: a worker of the town -> her/his after the clause
            return f"The {j.name} of {p.town} , who {j.verbs[0]} {g1} , {act[0]} about {p.poss} {g2} at the market every {day} ."
        return f"The {j.plural} of {p.town} , who {j.verbs[1]} {g1} , {act[1]} about their {g2} at the market every {day} ."

    def s_fact(self) -> str:
        t = self.r.choice(TOWNS)
        return self.r.choice((
            f"{t.name} lies on the {t.river} in {t.region} , and its people are known for their {t.good} .",
            f"{CAPITALS[t.region]} is the capital of {t.region} , and {t.name} is one of its towns .",
            f"The market in {t.name} is held every {t.market} , when the farmers sell {t.good} by the {t.unit} .",
            f"{self.w.mayors[t.name].full} , the mayor of {t.name} , lives near the {t.river} bridge .",
        ))

    # Brown-style stories ---------------------------------------------------------------------
    def s_intro(self) -> str:
        p = self.person()
        if self.r.random() < 0.3:
            return f"In {p.town} there lived {_a(p.job)} {p.job} named {p.full} , who had {_a(p.colour)} {p.colour} {p.species} ."
        return self.opened(self.r.choice((
            f"{p.full} , the {p.job} from {p.town} , had {_a(p.colour)} {p.colour} {p.species} named {p.pet} .",
            f"{p.full} was {_a(p.job)} {p.job} in {p.town} and kept {_a(p.colour)} {p.colour} {p.species} called {p.pet} .",
        )))

    def s_market(self) -> str:
        p = self.person()
        t = TOWN[p.town]
        return (f"Every {t.market} , {p.first} walked to the market in {t.name} with {p.poss} {p.species} "
                f"{p.pet} , and {p.subj} came home with a {t.unit} of {t.good} .")

    def s_work(self) -> str:
        p = self.person()
        j = JOB[p.job]
        return self.r.choice((
            self.opened(f"{p.full} {j.verbs[2]} {self.goods(p.job)} at the {j.place} in {p.town} until the sun went down ."),
            f"`` Today I {j.verbs[2]} {self.num(2, 12)} {self.goods(p.job)} , '' said {p.first} the {j.name} {self.r.choice(SAY_ADVERBS)} to {p.poss} {p.species} .",
            f"Not only did {p.first} {j.verbs[1]} {self.goods(p.job)} , but {p.subj} also fed {p.poss} {p.species} {SPECIE[p.species].food} every evening .",
        ))

    def s_pet(self) -> str:
        p = self.person()
        s = SPECIE[p.species]
        return self.r.choice((
            f"Last {self.r.choice(DAYS)} , {p.pet} , the {p.colour} {p.species} that belongs to {p.full} , {self.r.choice(s.deeds)} .",
            f"When {p.first} came home from the {JOB[p.job].place} , {p.poss} {p.species} {p.pet} {s.sound[1]} at the door and {p.subj} gave it some {s.food} .",
            f"`` Where is my {p.species} ? '' asked {p.first} , and {p.pet} came running from the {JOB[p.job].place} .",
        ))

    def s_home(self) -> str:
        p = self.person()
        t = TOWN[p.town]
        if self.r.random() < 0.5:
            return self.opened(f"{p.full} lived in {t.name} , near the banks of the {t.river} , with {p.poss} {p.species} {p.pet} .")
        q = self.neighbour(p)
        return self.opened(f"{p.first} and {q.first} , who both lived in {t.name} , walked together to "
                           f"{CAPITALS[t.region]} , the capital of {t.region} .")

    def s_clause(self) -> str:
        p = self.person()
        j, t = JOB[p.job], TOWN[p.town]
        j2 = self.r.choice([x for x in JOBS if x.name != p.job])
        s1, s2 = self.r.sample(SEASONS, 2)
        return self.r.choice((
            f"Although {p.first} was {_a(j.name)} {j.name} , {p.subj} dreamed of becoming {_a(j2.name)} {j2.name} in {CAPITALS[t.region]} .",
            f"If it snows in {t.name} , the {j.plural} of {t.name} stay at home and talk about their {self.r.choice(j.goods)} .",
            f"In {s1} the {j.plural} of {t.name} {j.verbs[1]} more {self.r.choice(j.goods)} than in {s2} .",
            f"The road from {t.name} to {self.r.choice([x.name for x in TOWNS if x.river == t.river and x is not t])} crosses the {t.river} at an old stone bridge .",
        ))

    def s_pair(self) -> str:
        p = self.person()
        q = self.neighbour(p)
        jp, jq = JOB[p.job], JOB[q.job]
        return (f"{p.first} , who {jp.verbs[0]} {self.r.choice(jp.goods)} , and {q.first} , who "
                f"{jq.verbs[0]} {self.r.choice(jq.goods)} , met at the market in {p.town} on {TOWN[p.town].market} .")

    def s_visit(self) -> str:
        p = self.person()
        q = self.r.choice([x for x in self.w.people if x.job != p.job])
        return self.opened(self.r.choice((
            f"{p.full} went to see {q.full} , the {q.job} of {q.town} , and came back with some {self.goods(q.job)} .",
            f"{p.first} asked {q.first} , who {JOB[q.job].verbs[0]} {self.goods(q.job)} in {q.town} , to visit {p.obj} in {p.town} .",
        )))

    def s_count(self) -> str:
        p = self.person()
        s = SPECIE[p.species]
        n = self.r.randint(2, 9)
        return self.r.choice((
            f"On the farm of {p.full} there were {self.num(n, n)} {s.plural} , but only {p.pet} , {_a(p.colour)} {p.colour} {s.name} , was allowed in the house .",
            f"{p.pet} was the cleverest of the {s.plural} in {p.town} , and {p.first} was very proud of the {s.name} .",
            f"The {s.plural} of {p.town} eat {s.food} , but {p.pet} , the {s.name} of {p.full} , eats only the best {s.food} .",
        ))

    def s_lesson(self) -> str:
        p = self.r.choice([x for x in self.w.people if x.job == "teacher"])
        t = self.r.choice(TOWNS)
        return self.r.choice((
            f"{p.full} , the teacher of {p.town} , told the children that {CAPITALS[t.region]} is the capital of {t.region} .",
            f"`` Which river flows through {t.name} ? '' asked {p.first} , and the children answered , `` The {t.river} . ''",
            f"The children of {p.town} learned from {p.first} that the market in {t.name} is held every {t.market} .",
        ))

    # News-style reports ----------------------------------------------------------------------
    def n_price(self) -> str:
        t = self.r.choice(TOWNS)
        old = self.r.randint(3, 60)
        if self.r.random() < 0.5:
            new, verb, side = old + self.r.randint(1, 9), "rose", "up"
        else:
            new, verb, side = max(1, old - self.r.randint(1, 9)), "fell", "down"
        if new == old:
            new, verb, side = old + 1, "rose", "up"
        return (f"The price of {t.good} in {t.name} {verb} to {new} coins a {t.unit} on {self.r.choice(DAYS)} , "
                f"{side} from {old} coins a week earlier , {self.source()} .")

    def n_ship(self) -> str:
        t = self.r.choice(TOWNS)
        dest = self.r.choice([x for x in TOWNS if x.river == t.river and x is not t])
        return (f"Merchants from {t.name} shipped {self.num(12, 900)} {t.unit}s of {t.good} down the "
                f"{t.river} to {dest.name} in {self.r.choice(MONTHS)} , {self.source()} .")

    def n_mayor(self) -> str:
        t = self.r.choice(TOWNS)
        m = self.w.mayors[t.name]
        return (f"Mayor {m.full} of {t.name} said on {self.r.choice(DAYS)} that the council would spend "
                f"{self.num(100, 5000)} coins to repair the bridge over the {t.river} before {YEAR_NOW + self.r.randint(1, 4)} .")

    def n_fair(self) -> str:
        t = self.r.choice(TOWNS)
        return (f"The {t.good} fair in {t.name} , held every {self.r.choice(MONTHS)} since {self.r.randint(1090, 1140)} , "
                f"drew {self.num(200, 9000)} visitors this year , up {self.num(2, 40)} percent from last year .")

    def n_sport(self) -> str:
        t, u = self.r.sample(TOWNS, 2)
        a = self.r.randint(1, 6)
        b = self.r.randint(0, a - 1)
        scorer = self.r.choice(self.w.people_of(t.name))
        return (f"{t.name} beat {u.name} {a}-{b} in the final of the {t.region} cup on {self.r.choice(DAYS)} , "
                f"with {scorer.full} scoring {'once' if a == 1 else 'twice' if a == 2 else str(a - 1) + ' times'} .")

    def n_quote(self) -> str:
        p = self.person()
        j = JOB[p.job]
        return self.r.choice((
            f"`` We {j.verbs[1]} more {self.r.choice(j.goods)} every year , '' said {p.full} , {_a(j.name)} {j.name} from {p.town} .",
            f"`` The {TOWN[p.town].good} of {p.town} is the best in {TOWN[p.town].region} , '' said {p.full} , who has worked as {_a(j.name)} {j.name} for {self.num(2, 40)} years .",
        ))

    def n_census(self) -> str:
        t = self.r.choice(TOWNS)
        j = self.r.choice(JOBS)
        n, m = self.r.randint(4, 90), self.r.randint(1, 12)
        return self.r.choice((
            f"{t.name} , which lies on the {t.river} , had {self.num(800, 20000)} inhabitants at the count of {self.r.randint(1140, YEAR_NOW)} , {self.source()} .",
            f"{t.name} now has {n + m} {j.plural} , {m} more than in {self.r.randint(1140, YEAR_NOW - 1)} , and each of them {j.verbs[0]} {self.r.choice(j.goods)} .",
        ))

    def n_animal(self) -> str:
        p = self.person()
        return (f"A {p.colour} {p.species} named {p.pet} , which belongs to {p.full} of {p.town} , was found "
                f"{self.num(2, 30)} miles from home on {self.r.choice(DAYS)} .")

    def n_tax(self) -> str:
        t = self.r.choice(TOWNS)
        return (f"The council of {t.region} raised the tax on {t.good} by {self.num(2, 25)} percent to "
                f"{self.num(2, 40)} coins a {t.unit} , its treasurer {self.w.mayors[CAPITALS[t.region]].full} said .")

    def n_cart(self) -> str:
        t = self.r.choice(TOWNS)
        u = self.r.choice([x for x in TOWNS if x.region == t.region and x is not t])
        return (f"A cart loaded with {self.num(3, 60)} {t.unit}s of {t.good} overturned on the road between "
                f"{t.name} and {u.name} on {self.r.choice(DAYS)} , but no one was hurt .")

    def n_sales(self) -> str:
        wt, t = self.r.choice(WEATHER), self.r.choice(TOWNS)
        return (f"Sales of {t.good} in {t.region} fell {self.num(3, 45)} percent in {self.r.choice(MONTHS)} because of "
                f"{wt.report} , and therefore the {JOB[wt.job].plural} of {t.name} {wt.outcome} .")

    def n_vote(self) -> str:
        t = self.r.choice(TOWNS)
        yes = self.r.randint(5, 15)
        no = self.r.randint(0, yes - 1)
        j = self.r.choice([x for x in JOBS if x.place in BUILDINGS])
        return (f"The council of {t.name} voted {yes} to {no} on {self.r.choice(DAYS)} to build a new {j.place} "
                f"for the {j.plural} of the town , Mayor {self.w.mayors[t.name].full} said .")

    BROWN = ("s_intro", "s_market", "s_work", "s_work", "s_pet", "s_home", "s_clause", "s_pair",
             "s_weather", "s_agreement", "s_agreement", "s_fact", "s_visit", "s_count", "s_lesson")
    NEWS = ("n_price", "n_price", "n_ship", "n_mayor", "n_fair", "n_sport", "n_quote", "n_census",
            "n_animal", "n_tax", "n_cart", "n_sales", "n_vote", "s_weather", "s_agreement", "s_fact")


def render_news(tokens: str) -> str:
    """Space-separated tokens -> raw text: no space before punctuation, `` '' become quotes."""
    out, glue = [], True
    for tok in tokens.split(" "):
        if tok == "``":
            out.append(("" if glue else " ") + '"')
            glue = True
        elif tok in (",", ".", "?", "!", ";", ":"):
            out.append(tok)
        elif tok == "''":
            out.append('"')
        else:
            out.append(("" if glue else " ") + tok)
            glue = False
    return "".join(out)


def lm_corpus(world: World, seed: int, n_words: int, news: bool) -> list[str]:
    """Sentences until about `n_words` whitespace-separated words; news ones rendered as raw text."""
    writer = SentenceWriter(world, random.Random(seed), news)
    lines, words = [], 0
    while words < n_words:
        s = writer.sentence()
        line = render_news(s) if news else s
        words += line.count(" ") + 1
        lines.append(line)
    return lines


# --------------------------------------------------------------------------------------------
# Emotion: lowercase tweets with cue words, distractors and ~10 % label noise
# --------------------------------------------------------------------------------------------

def _label_counts(n: int) -> dict[str, int]:
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
    labels = [lab for lab, k in _label_counts(n).items() for _ in range(k)]
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
        return f"What does {p.full} do for a living?", f"{p.full} is {_a(p.job)} {p.job}."
    if kind == 11:
        return f"What pet does {p.full} have?", f"{p.full} has {_a(p.colour)} {p.colour} {p.species} named {p.pet}."
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

def _step(a: int, op: str, b: int) -> tuple[str, int]:
    c = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
    return f"{a} {op} {b} = <<{a}{op}{b}={c}>>{c}", c


def _problem(world: World, r: random.Random) -> tuple[str, str]:
    kind = r.randrange(9)
    sellers = [q for q in world.people if q.job not in ("teacher", "healer")]
    p = r.choice(sellers if kind in (1, 4, 8) else world.people)   # people whose goods can be sold
    j, t = JOB[p.job], TOWN[p.town]
    g = r.choice(j.goods)
    P, S = p.first, _cap(p.subj)
    if kind == 0:
        a, d = r.randint(2, 15), r.randint(2, 9)
        s, c = _step(a, "*", d)
        return (f"{P} is {_a(j.name)} {j.name} in {t.name}. {S} {j.verbs[0]} {a} {g} every day. "
                f"How many {g} does {p.subj} {j.verbs[1]} in {d} days?",
                f"In {d} days {P} {j.verbs[0]} {s} {g}.\n#### {c}")
    if kind == 1:
        b, c2 = r.randint(2, 20), r.randint(2, 20)
        a = b + c2 + r.randint(1, 40)
        s1, used = _step(b, "+", c2)
        s2, left = _step(a, "-", used)
        return (f"{P} had {a} {g}. {S} sold {b} of them at the market in {t.name} and gave {c2} to "
                f"{p.poss} neighbour. How many {g} does {P} have left?",
                f"{P} sold and gave away {s1} {g}.\n{S} has {s2} {g} left.\n#### {left}")
    if kind == 2:
        price, q = r.randint(2, 20), r.randint(2, 9)
        s, c = _step(q, "*", price)
        return (f"At the market in {t.name}, one {t.unit} of {t.good} costs {price} coins. {P} buys {q} {t.unit}s. "
                f"How many coins does {p.subj} pay?", f"{P} pays {s} coins.\n#### {c}")
    if kind == 3:
        price, q = r.randint(2, 12), r.randint(2, 6)
        s1, cost = _step(q, "*", price)
        paid = cost + r.randint(1, 30)
        s2, change = _step(paid, "-", cost)
        return (f"One {t.unit} of {t.good} costs {price} coins in {t.name}. {P} buys {q} {t.unit}s and pays with "
                f"{paid} coins. How much change does {p.subj} get?",
                f"The {t.good} costs {s1} coins.\n{S} gets {s2} coins in change.\n#### {change}")
    if kind == 4:
        b, k = r.randint(2, 12), r.randint(2, 12)
        s, c = _step(b * k, "/", b)
        return (f"{P} has {b * k} {g} and packs them into boxes of {b}. How many boxes does {p.subj} fill?",
                f"{P} fills {s} boxes.\n#### {c}")
    if kind == 5:
        a, b = r.randint(3, 40), r.randint(3, 40)
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
        a, b = r.randint(3, 30), r.randint(2, 20)
        s1, qa = _step(a, "+", b)
        s2, tot = _step(a, "+", qa)
        return (f"{P} has {a} coins. {q.first} has {b} coins more than {P}. How many coins do they have together?",
                f"{q.first} has {s1} coins.\nTogether they have {s2} coins.\n#### {tot}")
    a = 2 * r.randint(3, 40)
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


def abstracts(world: World, seed: int, n: int) -> tuple[list[dict], list[dict]]:
    """`n` toy abstracts (3-5 sentences), each about one leaf topic; also [{"id", "qcode"}]."""
    r = random.Random(seed)
    leaf_code = {path: code for code, _, path, _, is_leaf in taxonomy_codes() if is_leaf}
    leaves = list(LEAVES)
    rows, labels = [], []
    for i in range(n):
        leaf = leaves[i % len(leaves)] if i < len(leaves) else r.choice(leaves)
        k1, k2, k3, k4 = r.sample(leaf.keywords, 4)
        t = r.choice(TOWNS)
        author = r.choice(world.people_of(t.name))
        y1 = r.randint(1120, 1140)
        y2 = y1 + r.randint(3, 12)
        title = r.choice((f"{_cap(k1)} and {k2} in {t.name}", f"On {k1}, {k2} and {k3}",
                          f"A study of {k1} in {t.region}", f"{_cap(k1)}: evidence from {t.name}"))
        sents = [
            r.choice((f"We study {leaf.subject} in {t.name} and the nearby towns of {t.region}.",
                      f"This paper examines {leaf.subject} across {t.region}.",
                      f"We report a survey of {leaf.subject}, carried out by {author.full} of {t.name}.")),
            f"Using {r.randint(12, 400)} records kept between {y1} and {y2}, we measure {k1} and {k2}.",
            r.choice((f"We find that the part played by {k3} is larger than expected, especially in {r.choice(SEASONS)}.",
                      f"Our results show a clear link between {k1} and {k3}.",
                      f"Surprisingly, {k2} changed little while {k3} doubled over the period.")),
        ]
        extra = r.randint(0, 2)
        if extra >= 1:
            sents.append(r.choice((f"A simple model of {k4} explains most of the variation between towns.",
                                   f"We also compare {k4} in {t.name} with {r.choice(TOWNS).name}.")))
        if extra == 2:
            sents.append(r.choice((f"These findings should help anyone who works with {k1}.",
                                   f"We close with open questions about {k2} and {k4}.")))
        aid = f"{YEAR_NOW}.{i + 1:04d}"
        rows.append({"id": aid, "title": title, "abstract": " ".join(sents)})
        labels.append({"id": aid, "qcode": leaf_code[leaf.path]})
    return rows, labels


# --------------------------------------------------------------------------------------------
# data/README.md, written from the world and the generated files
# --------------------------------------------------------------------------------------------

# Word-level perplexity of interpolated absolute-discounting n-gram models (d = 0.75, add-one
# unigram at the bottom; tokens: lowercased runs of [a-z0-9] or single punctuation marks, <s> and
# </s> around each line). news: train -> valid; brown: first 90 % of tokens -> last 10 %.
# Measured once with a throwaway script; tests/test_embedded.py recomputes and checks them.
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
    ("arxiv/abstracts.jsonl", '`{"id", "title", "abstract"}`, 3-5 sentences, each about one leaf topic'),
    ("arxiv/labels.jsonl", '`{"id", "qcode"}`: the true leaf topic of each abstract (loaders ignore it)'),
    ("iptc/mediatopic.tsv", "`qcode level path definition is_leaf`, 8 top topics, 30 leaves (levels 1-3)"),
)


def readme(world: World, files: dict[str, str], meta: dict) -> str:
    """The text of data/README.md."""
    out = ["# Embedded toy data", "",
           "Written by `python -m lm.data.embedded` (seed %d) from an invented toy world; do not edit by" % SEED,
           "hand. `tests/test_embedded.py` regenerates the tree and checks it is byte-identical to this",
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
            "  scores `4-1` with the winner named first.", "",
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
            "Each abstract uses words found only in its leaf topic; `arxiv/labels.jsonl` holds the true leaf,",
            "so a labelling method can be scored.", ""]
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
    ap = argparse.ArgumentParser(prog="python -m lm.data.embedded",
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
