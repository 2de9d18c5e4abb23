"""The toy world behind the embedded data: its places, people, jobs, animals and word lists.

Everything here was invented for this project. `build_world(seed)` fixes who lives where, what
each person does and which animal they keep; the generator in `lm.data.toy.build` then writes
every sentence, question and abstract from these facts, so that a fact stated in one file (say,
"Mira Hollis is a weaver from Elmford") holds in every other file too.

Tables are tuples (ordered), never sets, so iteration order is the same on every platform.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

# --------------------------------------------------------------------------------------------
# Places
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Town:
    name: str      # e.g. "Elmford"
    region: str    # the region it lies in
    river: str     # the river it lies on, e.g. "Tamsel" (written "the Tamsel")
    good: str      # what the town is known for, a plural or mass noun: "cheese", "apples"
    unit: str      # how the good is sold: "wheel" (of cheese), "basket" (of apples)
    market: str    # its market day, e.g. "Monday"


# Region -> its capital (the first town of the region in TOWNS).
REGIONS = ("Hollowmark", "Veldmoor", "Saltreach", "Greywold")

TOWNS = (
    Town("Elmford", "Hollowmark", "Tamsel", "cheese", "wheel", "Monday"),
    Town("Quillmere", "Hollowmark", "Tamsel", "wool", "sack", "Tuesday"),
    Town("Bramblewick", "Hollowmark", "Brindle", "apples", "basket", "Thursday"),
    Town("Fernbarrow", "Hollowmark", "Brindle", "honey", "jar", "Saturday"),
    Town("Kestrelby", "Veldmoor", "Oster", "iron", "bar", "Wednesday"),
    Town("Marrowdale", "Veldmoor", "Oster", "barley", "sack", "Friday"),
    Town("Pellington", "Veldmoor", "Oster", "timber", "cart", "Monday"),
    Town("Thornbeck", "Veldmoor", "Wend", "candles", "box", "Thursday"),
    Town("Gullhaven", "Saltreach", "Wend", "fish", "basket", "Saturday"),
    Town("Brineholt", "Saltreach", "Saltwater", "salt", "sack", "Tuesday"),
    Town("Cobbleton", "Saltreach", "Saltwater", "rope", "coil", "Friday"),
    Town("Wickmouth", "Saltreach", "Saltwater", "cider", "barrel", "Wednesday"),
    Town("Ashcombe", "Greywold", "Darrow", "cloth", "bolt", "Tuesday"),
    Town("Dunmarsh", "Greywold", "Darrow", "turnips", "sack", "Saturday"),
    Town("Harlowby", "Greywold", "Hollin", "pears", "basket", "Monday"),
    Town("Tansford", "Greywold", "Hollin", "eggs", "dozen", "Thursday"),
)

CAPITALS = {r: next(t.name for t in TOWNS if t.region == r) for r in REGIONS}
TOWN = {t.name: t for t in TOWNS}

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
SEASONS = ("spring", "summer", "autumn", "winter")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten", "eleven", "twelve")
YEAR_NOW = 1152   # the "present" year of the news corpus

# --------------------------------------------------------------------------------------------
# Jobs and animals
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    name: str     # singular: "baker"
    plural: str   # "bakers", "boatmen"
    verbs: tuple  # (3rd person singular, plural/base, past): ("bakes", "bake", "baked")
    goods: tuple  # plural nouns the job makes or looks after
    place: str    # where the work is done


JOBS = (
    Job("baker", "bakers", ("bakes", "bake", "baked"), ("loaves", "pies", "buns", "rolls"), "bakery"),
    Job("miller", "millers", ("grinds", "grind", "ground"), ("oats", "grain", "barley", "rye"), "mill"),
    Job("weaver", "weavers", ("weaves", "weave", "wove"), ("scarves", "blankets", "shawls", "rugs"), "loom"),
    Job("smith", "smiths", ("forges", "forge", "forged"), ("nails", "horseshoes", "knives", "hinges"), "forge"),
    Job("potter", "potters", ("shapes", "shape", "shaped"), ("pots", "jugs", "bowls", "cups"), "kiln"),
    Job("fisherman", "fishermen", ("catches", "catch", "caught"), ("trout", "eels", "perch", "pike"), "harbour"),
    Job("shepherd", "shepherds", ("tends", "tend", "tended"), ("sheep", "lambs", "ewes", "rams"), "hills"),
    Job("carpenter", "carpenters", ("builds", "build", "built"), ("chairs", "tables", "carts", "doors"), "workshop"),
    Job("beekeeper", "beekeepers", ("keeps", "keep", "kept"), ("bees", "hives", "swarms", "queens"), "meadow"),
    Job("tailor", "tailors", ("sews", "sew", "sewed"), ("coats", "cloaks", "shirts", "jackets"), "shop"),
    Job("farmer", "farmers", ("grows", "grow", "grew"), ("cabbages", "beans", "onions", "leeks"), "fields"),
    Job("teacher", "teachers", ("teaches", "teach", "taught"), ("letters", "sums", "songs", "maps"), "school"),
    Job("healer", "healers", ("treats", "treat", "treated"), ("fevers", "coughs", "burns", "sprains"), "infirmary"),
    Job("boatman", "boatmen", ("rows", "row", "rowed"), ("boats", "barges", "ferries", "rafts"), "river"),
    Job("chandler", "chandlers", ("dips", "dip", "dipped"), ("candles", "tapers", "wicks", "lamps"), "shop"),
    Job("brewer", "brewers", ("brews", "brew", "brewed"), ("ales", "ciders", "stouts", "meads"), "brewery"),
)
JOB = {j.name: j for j in JOBS}


@dataclass(frozen=True)
class Species:
    name: str     # "goat"
    plural: str   # "goats", "geese"
    sound: tuple  # (3rd person singular, past): ("bleats", "bleated")
    food: str     # what it eats
    deeds: tuple  # past-tense things it did


SPECIES = (
    Species("dog", "dogs", ("barks", "barked"), "bones", ("chased the hens", "dug a hole under the fence", "slept by the fire")),
    Species("cat", "cats", ("purrs", "purred"), "fish", ("caught a mouse in the barn", "slept on the warm stove", "climbed onto the roof")),
    Species("goat", "goats", ("bleats", "bleated"), "cabbages", ("ate the washing on the line", "climbed onto the woodpile", "butted the gate open")),
    Species("horse", "horses", ("neighs", "neighed"), "oats", ("pulled the cart up the hill", "jumped over the hedge", "waited patiently by the well")),
    Species("donkey", "donkeys", ("brays", "brayed"), "hay", ("carried two sacks to the mill", "refused to cross the bridge", "ate the thistles by the road")),
    Species("hen", "hens", ("clucks", "clucked"), "corn", ("laid an egg in the hat", "ran across the yard", "hid under the cart")),
    Species("goose", "geese", ("honks", "honked"), "grass", ("chased the postman", "guarded the gate", "swam across the pond")),
    Species("owl", "owls", ("hoots", "hooted"), "mice", ("hunted in the orchard at night", "slept in the loft all day", "watched the lane from the oak")),
    Species("pig", "pigs", ("grunts", "grunted"), "acorns", ("rolled in the mud", "dug up the turnips", "escaped from the sty")),
    Species("rabbit", "rabbits", ("thumps", "thumped"), "carrots", ("nibbled the lettuce", "hid in the hedge", "dug a burrow by the wall")),
    Species("duck", "ducks", ("quacks", "quacked"), "bread", ("paddled in the puddles", "followed the children home", "swam in the mill pond")),
    Species("ferret", "ferrets", ("chatters", "chattered"), "eggs", ("stole a sock", "slipped into a boot", "ran up a sleeve")),
)
SPECIE = {s.name: s for s in SPECIES}

COLOURS = ("grey", "black", "white", "brown", "ginger", "spotted", "speckled", "golden")

PET_NAMES = (
    "Pip", "Bramble", "Clover", "Soot", "Biscuit", "Marigold", "Thistle", "Nutmeg", "Pepper",
    "Juniper", "Moss", "Tansy", "Button", "Cinder", "Fennel", "Hazel", "Sorrel", "Puddle",
    "Smudge", "Acorn", "Whisk", "Tumble", "Crumb", "Dapple", "Ember", "Gorse", "Kettle",
    "Mallow", "Nettle", "Pebble", "Quince", "Rook", "Sprout", "Tallow", "Umber", "Wren",
    "Yarrow", "Ziggy", "Lumpkin", "Figgy",
)

# --------------------------------------------------------------------------------------------
# People
# --------------------------------------------------------------------------------------------

FEMALE_NAMES = (
    "Mira", "Elsbeth", "Tilda", "Nessa", "Orla", "Brenna", "Idra", "Wynne", "Sabel", "Lotte",
    "Fenna", "Ysolde", "Marit", "Oda", "Alys", "Bettany", "Cressa", "Edda", "Gwenna", "Hesper",
    "Ilse", "Jessamy", "Kerra", "Linnet", "Maudie", "Nell", "Ottilie", "Rowena", "Saffi", "Thea",
    "Una", "Vesna", "Wilma", "Yara", "Zinnia", "Agna", "Bryony", "Dorrit", "Liesl", "Petra",
)
MALE_NAMES = (
    "Tomas", "Aldric", "Bram", "Corwin", "Dunstan", "Edric", "Fennick", "Garrick", "Hale", "Jory",
    "Kellan", "Loric", "Madoc", "Osric", "Piers", "Quentin", "Rufus", "Silas", "Tobin", "Ulric",
    "Varden", "Wendel", "Yorick", "Alben", "Barnaby", "Cedric", "Dorian", "Emrys", "Florian", "Gideon",
    "Hamish", "Ivo", "Kit", "Lucan", "Milo", "Nestor", "Oswin", "Percival", "Ralf", "Anselm",
)
SURNAMES = (
    "Hollis", "Thorne", "Pellow", "Ashdown", "Brindlecombe", "Cobb", "Dunmore", "Fairweather",
    "Greave", "Harrow", "Inglewood", "Jessop", "Kettering", "Larkin", "Marchbank", "Nettleford",
    "Oakes", "Penhallow", "Quarrie", "Rookwood", "Sallow", "Tamworth", "Underhill", "Vance",
    "Whitlock", "Yarrowby", "Ambler", "Blackwood", "Crane", "Dewhurst", "Elmsworth", "Fletcher",
    "Gorringe", "Hatherley", "Ibbot", "Jolliffe", "Kemble", "Lockyer", "Mossop", "Nutley",
)


@dataclass(frozen=True)
class Person:
    first: str        # first name, unique in the world
    last: str         # surname
    female: bool      # decides she/her or he/his
    town: str         # home town (a key of TOWN)
    job: str          # a key of JOB
    species: str      # the pet's species (a key of SPECIE)
    pet: str          # the pet's name
    colour: str       # the pet's colour

    @property
    def full(self) -> str:
        return f"{self.first} {self.last}"

    @property
    def subj(self) -> str:
        return "she" if self.female else "he"

    @property
    def poss(self) -> str:
        return "her" if self.female else "his"

    @property
    def obj(self) -> str:
        return "her" if self.female else "him"


@dataclass
class World:
    people: list                                 # every Person, in a fixed order
    mayors: dict = field(default_factory=dict)  # town name -> Person who is its mayor

    def people_of(self, town: str) -> list:
        return [p for p in self.people if p.town == town]

    def person(self, first: str) -> Person:
        return next(p for p in self.people if p.first == first)


PEOPLE_PER_TOWN = 5


def build_world(seed: int) -> World:
    """Give every first name a surname, a home town, a job and a pet, reproducibly from `seed`.

    80 people, 5 per town, every job held by 5 people; each town has one mayor among its people.
    """
    rng = random.Random(seed)
    firsts = [(n, True) for n in FEMALE_NAMES] + [(n, False) for n in MALE_NAMES]
    rng.shuffle(firsts)
    surnames = list(SURNAMES) * 2
    rng.shuffle(surnames)
    jobs = [j.name for j in JOBS] * (len(firsts) // len(JOBS))
    rng.shuffle(jobs)
    people = []
    for i, (first, female) in enumerate(firsts):
        town = TOWNS[i // PEOPLE_PER_TOWN].name
        people.append(Person(first, surnames[i], female, town, jobs[i], rng.choice(SPECIES).name,
                             rng.choice(PET_NAMES), rng.choice(COLOURS)))
    world = World(people)
    for t in TOWNS:
        world.mayors[t.name] = rng.choice(world.people_of(t.name))
    return world


# --------------------------------------------------------------------------------------------
# Weather: a cause, what it does to a town, and who is therefore affected
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Weather:
    cause: str       # "it rained for {n} days in {town}"
    effect: str      # "the {river} rose over its banks"
    job: str         # the job it hurts or helps
    outcome: str     # what those workers then do (plural verb phrase, "their" for possessions)
    report: str      # a noun for news: "the heavy rain"


WEATHER = (
    Weather("it rained for {n} days in {town}", "the {river} rose over its banks", "boatman",
            "kept their boats tied up at the quay", "the heavy rain"),
    Weather("it rained for {n} days in {town}", "the lanes around {town} turned to mud", "farmer",
            "could not plough their fields", "the heavy rain"),
    Weather("snow fell on {town} for {n} nights", "the road to {capital} was closed", "chandler",
            "sold all their candles before noon", "the deep snow"),
    Weather("snow fell on {town} for {n} nights", "the hills above {town} were white", "shepherd",
            "brought their flocks down to the barns", "the deep snow"),
    Weather("no rain had fallen on {town} for {n} weeks", "the {river} ran low", "miller",
            "could not turn their wheels", "the long drought"),
    Weather("no rain had fallen on {town} for {n} weeks", "the meadows near {town} turned brown", "beekeeper",
            "found little honey in their hives", "the long drought"),
    Weather("a storm blew over {town} for {n} days", "the waves on the {river} grew tall", "fisherman",
            "stayed at home and mended their nets", "the storm"),
    Weather("a hard frost lay on {town} for {n} days", "the water in the troughs froze", "healer",
            "treated many coughs in their rooms", "the hard frost"),
    Weather("the sun shone on {town} for {n} weeks", "the barley ripened early", "brewer",
            "filled their barrels with new ale", "the warm weather"),
    Weather("a thick fog hung over {town} for {n} days", "nobody could see across the {river}", "boatman",
            "waited on the bank for the fog to lift", "the thick fog"),
)

# --------------------------------------------------------------------------------------------
# Emotion cues (tweet-like sentences, six labels)
# --------------------------------------------------------------------------------------------

EMOTION_CUES = {
    "sadness": ("sad", "lonely", "miserable", "gloomy", "heartbroken", "hopeless", "empty",
                "tearful", "defeated", "low", "homesick", "blue"),
    "joy": ("happy", "glad", "cheerful", "delighted", "thrilled", "joyful", "content", "excited",
            "pleased", "carefree", "elated", "bubbly"),
    "love": ("loving", "tender", "affectionate", "adored", "cherished", "fond", "devoted",
             "romantic", "smitten", "caring", "treasured", "warmhearted"),
    "anger": ("angry", "furious", "annoyed", "irritated", "bitter", "resentful", "grumpy",
              "cranky", "outraged", "livid", "fed up", "irritable"),
    "fear": ("scared", "afraid", "nervous", "anxious", "terrified", "uneasy", "frightened",
             "worried", "shaky", "panicky", "jumpy", "restless"),
    "surprise": ("amazed", "shocked", "astonished", "stunned", "surprised", "startled",
                 "speechless", "dazed", "astounded", "taken aback", "bewildered", "curious"),
}

# Shares of the labels, close to the real data (joy and sadness most frequent).
EMOTION_SHARES = {"joy": 0.335, "sadness": 0.29, "anger": 0.135, "fear": 0.12, "love": 0.083,
                  "surprise": 0.037}

# A reason per label; they add words that lean towards the label, never decide it.
EMOTION_REASONS = {
    "sadness": ("my old dog is not here anymore", "nobody came to the fair with me",
                "my sister moved away to the coast", "the rain ruined our little garden"),
    "joy": ("my cheese won a ribbon at the fair", "we finished the harvest early",
            "the sun came out for the whole week", "my friends threw me a party"),
    "love": ("my partner made me breakfast", "my grandmother knitted me a scarf",
             "he held my hand all the way home", "she wrote me a long letter"),
    "anger": ("someone stole my cart again", "the miller cheated me at the market",
              "my neighbour let his goats into my garden", "the council raised the tax again"),
    "fear": ("there are strange noises outside at night", "the river is rising near our house",
             "i have to speak in front of the whole town", "the storm is coming tonight"),
    "surprise": ("a letter came for me out of nowhere", "my goat came back after a month",
                 "the baker gave me a pie for free", "it snowed in the middle of summer"),
}

EMOTION_TAILS = (
    "today", "this morning", "tonight", "right now", "at work", "about the market",
    "about my job", "after the long week", "when i think about it", "since last night",
    "about everything", "with my family", "at the fair", "about the weather", "about school",
    "after talking to my mum", "on the way home", "about this year", "lately",
    "when i walk past the river", "and i do not know why", "about the whole thing",
)
EMOTION_ADVERBS = ("so", "really", "a little", "kind of", "very", "quite", "incredibly",
                   "a bit", "pretty", "rather", "truly", "just")

# --------------------------------------------------------------------------------------------
# Topics of the toy "abstracts" (the taxonomy written to iptc/mediatopic.tsv)
# --------------------------------------------------------------------------------------------

# (top topic, definition) in code order; code of top i is "toytop:{i:02d}000000".
TOP_TOPICS = (
    ("farming and food", "Growing crops, keeping animals and producing food in the toy world"),
    ("crafts and industry", "Making goods by hand: cloth, metal, clay and wood"),
    ("trade and markets", "Buying, selling and moving goods, and the money and taxes involved"),
    ("weather and seasons", "Rain, snow, wind and dry spells and what they do to towns and rivers"),
    ("animals and wildlife", "Wild and tame animals, birds and fish"),
    ("health and healing", "Illness and its treatment in people and animals"),
    ("towns and government", "Councils, public works and schooling in the towns"),
    ("festivals and sport", "Feasts, music, dance, races and games"),
)

@dataclass(frozen=True)
class Leaf:
    path: tuple       # topic names from the top down, e.g. ("farming and food", "crops", "orchards")
    definition: str   # one sentence
    subject: str      # what an abstract on it studies: "the yield of apple and pear trees"
    keywords: tuple   # words that only abstracts of this leaf use


# A middle level (level 2 with children) is listed through its leaves' paths.
LEAVES = (
    Leaf(("farming and food", "crops", "grain growing"), "Growing barley, oats, rye and wheat",
         "the growing of barley and rye", ("barley", "rye", "sowing", "furrows", "threshing", "seed corn", "stubble")),
    Leaf(("farming and food", "crops", "root vegetables"), "Growing turnips, onions, carrots and leeks",
         "the growing of turnips and carrots", ("turnips", "carrots", "parsnips", "root cellars", "beds of leeks", "digging forks", "compost")),
    Leaf(("farming and food", "crops", "orchards"), "Fruit trees and their harvest",
         "the yield of apple and pear trees", ("apple trees", "pear trees", "blossom", "grafting", "pruning", "windfalls", "orchards")),
    Leaf(("farming and food", "livestock", "sheep and goats"), "Keeping sheep and goats for wool, milk and meat",
         "the keeping of sheep and goats", ("flocks", "ewes", "lambing", "shearing", "fleeces", "goat milk", "sheepfolds")),
    Leaf(("farming and food", "livestock", "poultry"), "Keeping hens, ducks and geese",
         "the keeping of hens and geese", ("hens", "henhouses", "laying", "broody hens", "goslings", "egg counts", "perches")),
    Leaf(("farming and food", "beekeeping"), "Keeping bees for honey and wax",
         "the keeping of bees", ("hives", "honeycomb", "swarming", "beeswax", "queen bees", "nectar", "smokers")),
    Leaf(("crafts and industry", "weaving and cloth"), "Spinning, weaving and dyeing cloth",
         "the weaving of wool into cloth", ("looms", "spindles", "yarn", "dyes", "warp threads", "shuttles", "fulling")),
    Leaf(("crafts and industry", "metalwork"), "Forging and casting iron and other metals",
         "the forging of iron tools", ("anvils", "bellows", "tongs", "quenching", "iron bars", "horseshoes", "slag")),
    Leaf(("crafts and industry", "pottery"), "Shaping and firing clay",
         "the firing of clay pots", ("kilns", "clay", "glazes", "potter's wheels", "firing", "shards", "slip")),
    Leaf(("crafts and industry", "woodwork"), "Felling, sawing and joining timber",
         "the joining of timber", ("saws", "joints", "planks", "seasoned oak", "chisels", "lathes", "dowels")),
    Leaf(("trade and markets", "market prices"), "How the prices of goods rise and fall at market",
         "the prices of goods at market", ("prices", "haggling", "stalls", "price lists", "bargains", "buyers", "sellers")),
    Leaf(("trade and markets", "river shipping"), "Carrying goods by barge and boat along rivers",
         "the carrying of goods by barge", ("barges", "cargo", "quays", "tow paths", "locks", "boat tolls", "moorings")),
    Leaf(("trade and markets", "fairs"), "Yearly fairs where traders from many towns meet",
         "the yearly fairs", ("fairgrounds", "booths", "visiting traders", "fair days", "ribbons", "prize cheeses", "stall rents")),
    Leaf(("trade and markets", "taxes and coinage"), "Coins, tolls and the taxes towns collect",
         "the taxes and coins of the towns", ("coins", "tax rolls", "tolls", "mints", "treasurers", "silver pennies", "tithes")),
    Leaf(("weather and seasons", "rain and floods"), "Heavy rain and rivers that burst their banks",
         "heavy rain and floods", ("flood waters", "rainfall", "sandbags", "river levels", "burst banks", "soaked fields", "drains")),
    Leaf(("weather and seasons", "snow and frost"), "Cold winters, snowfall and frost",
         "snow and frost in winter", ("snowdrifts", "frost", "icicles", "frozen ponds", "sledges", "thaw", "snowfall")),
    Leaf(("weather and seasons", "storms and wind"), "Gales and storms and the damage they do",
         "storms and strong winds", ("gales", "gusts", "thunder", "lightning", "fallen trees", "torn roofs", "storm warnings")),
    Leaf(("weather and seasons", "drought"), "Long dry spells and low water",
         "long dry spells", ("dry spells", "parched soil", "dry wells", "water carts", "cracked earth", "dust", "low water")),
    Leaf(("animals and wildlife", "birds"), "Wild birds, their nests and their songs",
         "the wild birds of the woods", ("nests", "songbirds", "wrens", "owls", "migration", "feathers", "birdsong")),
    Leaf(("animals and wildlife", "river fish"), "Fish in rivers and ponds",
         "the fish of the rivers", ("trout", "eels", "spawning", "fish ladders", "nets", "perch", "fry")),
    Leaf(("animals and wildlife", "pets"), "Dogs, cats and other animals kept at home",
         "the animals people keep at home", ("pet dogs", "house cats", "collars", "leashes", "kennels", "tame ferrets", "pet names")),
    Leaf(("health and healing", "herbal remedies"), "Treating illness with herbs",
         "remedies made from herbs", ("herbs", "poultices", "chamomile", "tinctures", "salves", "mint tea", "herb gardens")),
    Leaf(("health and healing", "animal illness"), "Sickness in farm animals and its cure",
         "illness in farm animals", ("hoof rot", "lame horses", "sick calves", "drenches", "animal doctors", "scours", "ticks")),
    Leaf(("health and healing", "coughs and fevers"), "Coughs, colds and fevers in people",
         "coughs and fevers in winter", ("coughs", "fevers", "chills", "sore throats", "bed rest", "broth", "sneezing")),
    Leaf(("towns and government", "councils and mayors"), "Town councils, mayors and their decisions",
         "the work of town councils", ("councillors", "mayors", "votes", "town halls", "meetings", "elections", "by-laws")),
    Leaf(("towns and government", "roads and bridges"), "Building and mending roads and bridges",
         "the roads and bridges between towns", ("bridges", "cobbles", "milestones", "potholes", "arches", "road menders", "fords")),
    Leaf(("towns and government", "schools"), "Schools, teachers and pupils",
         "the schools of the towns", ("pupils", "classrooms", "slates", "lessons", "schoolmasters", "spelling", "school books")),
    Leaf(("festivals and sport", "music and dance"), "Songs, fiddles and dancing",
         "music and dancing at feasts", ("fiddles", "pipes", "drums", "dances", "singers", "tunes", "choirs")),
    Leaf(("festivals and sport", "races and games"), "Footraces, boat races and games of skill",
         "races and games between towns", ("footraces", "boat races", "tug of war", "runners", "finish lines", "trophies", "teams")),
    Leaf(("festivals and sport", "harvest feasts"), "Feasts held when the harvest is in",
         "the feasts after harvest", ("feasts", "banquets", "long tables", "harvest suppers", "roast geese", "lanterns", "toasts")),
)

# Definitions of the middle levels that have children.
MIDDLE_DEFINITIONS = {
    "crops": "Growing plants in fields, gardens and orchards",
    "livestock": "Keeping farm animals",
}

# Words the instruct tasks reverse, spell, sort and count (all lowercase letters).
TASK_WORDS = (
    "apple", "barley", "bridge", "candle", "cheese", "cloak", "donkey", "feather", "garden",
    "goose", "harbour", "honey", "kettle", "lantern", "meadow", "orchard", "pebble", "river",
    "saddle", "thistle", "turnip", "wagon", "willow", "basket", "hammer", "ladder", "market",
    "mitten", "pepper", "rabbit", "ribbon", "silver", "summer", "timber", "window", "winter",
    "button", "clover", "acorn", "anvil",
)

# Optional openers and adjectives: variety that a short context cannot predict.
OPENERS = (
    "One morning", "That evening", "Early on {day}", "In {month}", "Late one night", "After the harvest",
    "Before dawn", "On a cold morning", "On a warm afternoon", "Some years ago", "Later that week",
    "At first light", "In the autumn of {year}", "Once", "Just after noon", "On the first day of {month}",
    "During the fair", "When the bells rang", "On a rainy {day}", "Long ago",
)
GOOD_ADJECTIVES = ("fresh", "fine", "sturdy", "small", "large", "old", "new", "cheap", "beautiful",
                   "heavy", "plain", "good", "crooked", "tidy", "costly", "famous")
SAY_ADVERBS = ("quietly", "cheerfully", "proudly", "softly", "sharply", "wearily", "loudly", "kindly")
SOURCES = ("traders said", "a market clerk said", "merchants said", "the town crier reported",
           "according to the guild", "officials said", "a council clerk said")
