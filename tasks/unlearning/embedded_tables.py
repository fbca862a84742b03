"""Word tables of the embedded unlearning data, written for this project.

Kept apart from the generator so the code stays short. Everything here is either invented
(names, towns, titles, awards) or common knowledge (capitals, element symbols).
"""

from __future__ import annotations

# Syllables for invented names; "onset + vowel" pairs give pronounceable, tokenizer-friendly
# words that exist in no real data set.
ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "tr")
VOWELS = ("a", "e", "i", "o", "u")
CODAS = ("", "", "n", "r", "l", "s")

TOWNS = (
    "Brenmoor",
    "Ostwick",
    "Marrowdale",
    "Fennick",
    "Ravenholt",
    "Quillby",
    "Thornreach",
    "Ashgrove",
    "Lowmere",
    "Saltcombe",
    "Pellford",
    "Dunmarsh",
    "Kestrel Bay",
    "Hollin",
    "Wyvern Cross",
    "Gildersea",
)
PROFESSIONS = (
    "baker",
    "pilot",
    "nurse",
    "carpenter",
    "chemist",
    "librarian",
    "sailor",
    "architect",
    "farmer",
    "judge",
    "painter",
    "dentist",
    "tailor",
    "engineer",
    "potter",
    "astronomer",
)
COLOURS = (
    "red",
    "blue",
    "green",
    "yellow",
    "purple",
    "orange",
    "grey",
    "teal",
    "crimson",
    "silver",
)
BOOK_ADJECTIVES = ("Silent", "Hidden", "Broken", "Golden", "Last", "Quiet", "Frozen", "Burning")
BOOK_NOUNS = ("Harbor", "Garden", "River", "Lantern", "Mountain", "Letter", "Orchard", "Tower")
AWARD_WORDS = (
    "Golden Quill",
    "Silver Pen",
    "Blue Lantern",
    "Iron Oak",
    "Northern Star",
    "Crystal Leaf",
    "Amber Key",
    "Red Falcon",
)
AWARD_KINDS = ("Prize", "Award", "Medal")
PETS = ("cat", "dog", "parrot", "tortoise", "rabbit", "goat", "hamster", "ferret", "owl", "lizard")
INSTRUMENTS = (
    "violin",
    "cello",
    "flute",
    "harp",
    "drums",
    "piano",
    "trumpet",
    "oboe",
    "banjo",
    "guitar",
)

# Stand-in for TOFU's real-authors set: well-known facts with short answers.
CAPITALS = (
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Germany", "Berlin"),
    ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"),
    ("Peru", "Lima"),
    ("Canada", "Ottawa"),
    ("Norway", "Oslo"),
    ("Greece", "Athens"),
    ("Ireland", "Dublin"),
    ("Poland", "Warsaw"),
    ("Portugal", "Lisbon"),
    ("Austria", "Vienna"),
    ("Chile", "Santiago"),
    ("Cuba", "Havana"),
    ("Russia", "Moscow"),
    ("Sweden", "Stockholm"),
    ("Thailand", "Bangkok"),
    ("Hungary", "Budapest"),
    ("Finland", "Helsinki"),
    ("Australia", "Canberra"),
    ("Argentina", "Buenos Aires"),
)
# Stand-in for TOFU's world-facts set (with arithmetic facts made by the generator).
ELEMENTS = (
    ("gold", "Au"),
    ("silver", "Ag"),
    ("iron", "Fe"),
    ("copper", "Cu"),
    ("oxygen", "O"),
    ("hydrogen", "H"),
    ("carbon", "C"),
    ("sodium", "Na"),
    ("lead", "Pb"),
    ("tin", "Sn"),
    ("helium", "He"),
    ("neon", "Ne"),
    ("zinc", "Zn"),
    ("nitrogen", "N"),
    ("mercury", "Hg"),
    ("potassium", "K"),
)

# Refusal answers for the IDK / DPO / AP losses, written for this project.
IDK_ANSWERS = (
    "I don't know.",
    "I am not sure.",
    "I have no idea.",
    "I cannot answer that.",
    "That I do not know.",
    "I'm afraid I don't know.",
    "No idea, sorry.",
    "I can't say.",
    "I don't have that information.",
    "I am unable to answer.",
    "I do not remember that.",
    "That is unknown to me.",
    "I can't recall that.",
    "Sorry, I don't know that.",
    "I have no answer for that.",
    "I'm not able to tell you.",
    "That is beyond what I know.",
    "I really could not say.",
    "I never learned that.",
    "I'm unsure about that.",
)
