"""The toy world's language-model corpora: Brown-style token lines and raw news sentences.

`SentenceWriter` writes sentences about the facts of the world (`lm.data.toy.world`), so words far
back predict what comes next; `lm_corpus` writes sentences until a word budget is reached, and
`render_news` turns a news sentence's tokens into raw text. Used by `lm.data.toy.build` for
brown/ and news/, and by `lm.data.toy.tasks` for instruction answers.

    >>> render_news("`` We bake more pies , '' said Alys Crane .")
    '"We bake more pies," said Alys Crane.'
"""
from __future__ import annotations

import random

from lm.data.toy.world import (
    CAPITALS, DAYS, GOOD_ADJECTIVES, JOB, JOBS, MONTHS, NUMBER_WORDS, OPENERS, SAY_ADVERBS,
    SEASONS, SOURCES, SPECIE, TOWN, TOWNS, WEATHER, YEAR_NOW, Person, World,
)

BUILDINGS = ("bakery", "mill", "forge", "kiln", "workshop", "shop", "school", "infirmary", "brewery")


def a_or_an(word: str) -> str:
    """The indefinite article for `word`: 'an owl', 'a goat'."""
    return "an" if word[0] in "aeiou" else "a"


def capitalised(s: str) -> str:
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
            return f"In {p.town} there lived {a_or_an(p.job)} {p.job} named {p.full} , who had {a_or_an(p.colour)} {p.colour} {p.species} ."
        return self.opened(self.r.choice((
            f"{p.full} , the {p.job} from {p.town} , had {a_or_an(p.colour)} {p.colour} {p.species} named {p.pet} .",
            f"{p.full} was {a_or_an(p.job)} {p.job} in {p.town} and kept {a_or_an(p.colour)} {p.colour} {p.species} called {p.pet} .",
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
            f"Although {p.first} was {a_or_an(j.name)} {j.name} , {p.subj} dreamed of becoming {a_or_an(j2.name)} {j2.name} in {CAPITALS[t.region]} .",
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
            f"On the farm of {p.full} there were {self.num(n, n)} {s.plural} , but only {p.pet} , {a_or_an(p.colour)} {p.colour} {s.name} , was allowed in the house .",
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
            f"`` We {j.verbs[1]} more {self.r.choice(j.goods)} every year , '' said {p.full} , {a_or_an(j.name)} {j.name} from {p.town} .",
            f"`` The {TOWN[p.town].good} of {p.town} is the best in {TOWN[p.town].region} , '' said {p.full} , who has worked as {a_or_an(j.name)} {j.name} for {self.num(2, 40)} years .",
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
