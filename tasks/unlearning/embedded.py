"""Embedded unlearning data: invented people and their facts, generated from a seed.

What runs with no data files at all. Each person gets attributes (birthplace, birth year,
profession, favourite colour, parents' professions, a book, an award, a pet, an instrument);
each attribute becomes one short QA item (answers of 3-8 words), with a paraphrased answer
and ``n_perturbed`` wrong answers that reuse the paraphrase's wording with another value
(as TOFU's perturbed answers do), so truth ratios compare like with like. A few people
form the forget set, the others the retain set.

Utility stand-ins for TOFU's real-authors and world-facts sets are built from small tables
(capitals; element symbols and sums of two digits) with one-word answers and no paraphrase.
A tiny model trained from scratch knows none of this, so these facts are also returned as
``background``: training data for the model before unlearning (what a pretrained LLM
already knows), kept out of the retain objective.

Example:
    >>> from moopt.tasks.unlearning.embedded import make_embedded
    >>> data = make_embedded(n_people=10, n_forget=1, facts_per_person=4, seed=0)
    >>> data.sizes()["forget"], data.sizes()["retain"]
    (4, 36)
    >>> len(data.forget[0].perturbed_answers)
    3
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from moopt.tasks.unlearning import embedded_tables as T
from moopt.tasks.unlearning.data import QAItem, UnlearningData, assign_idk_answers


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


@dataclass(frozen=True)
class Attribute:
    """One fact about a person: question, answer and paraphrase templates and the values.

    Templates use ``{name}`` (full name, questions only), ``{first}`` (first name), ``{v}``
    (the value) and ``{a}`` (the article "a"/"an" for the value).
    """

    key: str
    question: str
    answer: str
    paraphrase: str
    values: tuple[str, ...]

    def render(self, template: str, name: str, first: str, value: str) -> str:
        return template.format(name=name, first=first, v=value, a=_article(value))


def _books() -> tuple[str, ...]:
    return tuple(f"The {a} {n}" for a in T.BOOK_ADJECTIVES for n in T.BOOK_NOUNS)


def _awards() -> tuple[str, ...]:
    return tuple(f"{w} {k}" for w in T.AWARD_WORDS for k in T.AWARD_KINDS)


# Order matters: ``facts_per_person = k`` uses the first k attributes.
ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "birthplace",
        "Where was {name} born?",
        "{first} was born in {v}.",
        "{first}'s birthplace is {v}.",
        T.TOWNS,
    ),
    Attribute(
        "profession",
        "What does {name} do for a living?",
        "{first} works as {a} {v}.",
        "{first} is {a} {v} by trade.",
        T.PROFESSIONS,
    ),
    Attribute(
        "book",
        "Which book did {name} write?",
        "{first} wrote {v}.",
        "{v} was written by {first}.",
        _books(),
    ),
    Attribute(
        "birth_year",
        "In which year was {name} born?",
        "{first} was born in {v}.",
        "{v} is the birth year of {first}.",
        tuple(str(y) for y in range(1920, 2000)),
    ),
    Attribute(
        "colour",
        "What is the favourite colour of {name}?",
        "{first} likes {v} best.",
        "{first}'s favourite colour is {v}.",
        T.COLOURS,
    ),
    Attribute(
        "award",
        "Which award did {name} win?",
        "{first} won the {v}.",
        "The {v} went to {first}.",
        _awards(),
    ),
    Attribute(
        "mother",
        "What was the job of {name}'s mother?",
        "{first}'s mother was {a} {v}.",
        "{first} had {a} {v} as mother.",
        T.PROFESSIONS,
    ),
    Attribute(
        "father",
        "What was the job of {name}'s father?",
        "{first}'s father was {a} {v}.",
        "{first} had {a} {v} as father.",
        T.PROFESSIONS,
    ),
    Attribute(
        "pet",
        "Which pet does {name} keep?",
        "{first} keeps a pet {v}.",
        "{first} owns {a} {v} as a pet.",
        T.PETS,
    ),
    Attribute(
        "instrument",
        "Which instrument does {name} play?",
        "{first} plays the {v}.",
        "The {v} is played by {first}.",
        T.INSTRUMENTS,
    ),
)


def _invented_word(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(T.ONSETS) + rng.choice(T.VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(T.CODAS)).capitalize()


def invent_names(n: int, rng: random.Random) -> list[tuple[str, str]]:
    """``n`` (first, last) names; first names are unique so answers name one person."""
    names: list[tuple[str, str]] = []
    firsts: set[str] = set()
    while len(names) < n:
        first, last = _invented_word(rng, 2), _invented_word(rng, rng.choice((2, 3)))
        if first not in firsts:
            firsts.add(first)
            names.append((first, last))
    return names


def _wrong_values(rng: random.Random, values: tuple[str, ...], true: str, k: int) -> list[str]:
    return rng.sample([v for v in values if v != true], k)


def person_items(
    first: str, last: str, facts: int, n_perturbed: int, rng: random.Random
) -> list[QAItem]:
    """One QA item per attribute among the first ``facts`` attributes."""
    name = f"{first} {last}"
    items = []
    for attr in ATTRIBUTES[:facts]:
        value = rng.choice(attr.values)
        wrong = _wrong_values(rng, attr.values, value, n_perturbed)
        items.append(
            QAItem(
                question=attr.render(attr.question, name, first, value),
                answer=attr.render(attr.answer, name, first, value),
                paraphrased_answer=attr.render(attr.paraphrase, name, first, value),
                perturbed_answers=[attr.render(attr.paraphrase, name, first, w) for w in wrong],
                subject=name,
            )
        )
    return items


def capital_items(n: int, n_perturbed: int, rng: random.Random) -> list[QAItem]:
    """Real-authors stand-in: "What is the capital of X?" with one-word answers."""
    capitals = tuple(c for _, c in T.CAPITALS)
    return [
        QAItem(
            f"What is the capital of {country}?",
            capital,
            perturbed_answers=_wrong_values(rng, capitals, capital, n_perturbed),
            subject=country,
        )
        for country, capital in T.CAPITALS[:n]
    ]


def world_fact_items(n: int, n_perturbed: int, rng: random.Random) -> list[QAItem]:
    """World-facts stand-in: element symbols, then sums of two digits, ``n`` in all."""
    symbols = tuple(s for _, s in T.ELEMENTS)
    items = [
        QAItem(
            f"What is the chemical symbol of {element}?",
            symbol,
            perturbed_answers=_wrong_values(rng, symbols, symbol, n_perturbed),
            subject=element,
        )
        for element, symbol in T.ELEMENTS[: (n + 1) // 2]
    ]
    sums = [(a, b) for a in range(2, 10) for b in range(2, 10) if a <= b]
    for a, b in rng.sample(sums, n - len(items)):
        wrong = _wrong_values(rng, tuple(str(s) for s in range(1, 21)), str(a + b), n_perturbed)
        items.append(
            QAItem(
                f"What is {a} plus {b}?", str(a + b), perturbed_answers=wrong, subject=f"{a}+{b}"
            )
        )
    return items


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"make_embedded: {name} must be an int in [{low}, {high}], got {value!r}")
    return value


def make_embedded(
    n_people: int = 20,
    n_forget: int = 2,
    facts_per_person: int = 6,
    n_perturbed: int = 3,
    n_utility: int = 20,
    seed: int = 0,
) -> UnlearningData:
    """Generate the embedded data set (deterministic for a given seed and sizes).

    ``n_forget`` of the ``n_people`` people (chosen by ``seed``) form the forget set, the
    rest the retain set; every item has a paraphrase and ``n_perturbed`` wrong answers.
    ``n_utility`` items go to each utility stand-in (capitals; world facts), which are also
    returned as ``background`` training data. The defaults give 12 forget, 108 retain and
    40 background items, about 1,700 words of text.
    """
    _check_int("n_people", n_people, 2, 2000)
    _check_int("n_forget", n_forget, 1, n_people - 1)
    _check_int("facts_per_person", facts_per_person, 1, len(ATTRIBUTES))
    _check_int("n_perturbed", n_perturbed, 1, min(len(a.values) for a in ATTRIBUTES) - 1)
    _check_int("n_utility", n_utility, 1, min(len(T.CAPITALS), 2 * len(T.ELEMENTS)))
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"make_embedded: seed must be an int, got {seed!r}")
    # Separate streams so changing one size does not reshuffle unrelated parts.
    rng_people = random.Random(f"people-{seed}")
    names = invent_names(n_people, rng_people)
    forget_ids = set(random.Random(f"split-{seed}").sample(range(n_people), n_forget))
    forget, retain = [], []
    for i, (first, last) in enumerate(names):
        items = person_items(first, last, facts_per_person, n_perturbed, rng_people)
        if i in forget_ids:
            forget.extend(QAItem(**{**vars(it), "task_id": "1"}) for it in items)
        else:
            retain.extend(items)
    rng_util = random.Random(f"utility-{seed}")
    capitals = capital_items(n_utility, n_perturbed, rng_util)
    world = world_fact_items(n_utility, n_perturbed, rng_util)
    idk = list(T.IDK_ANSWERS)
    return UnlearningData(
        forget=assign_idk_answers(forget, idk, seed),
        retain=assign_idk_answers(retain, idk, seed + 1),
        forget_eval=list(forget),
        retain_eval=list(retain),
        real_authors_eval=capitals,
        world_facts_eval=world,
        idk_answers=idk,
        background=capitals + world,
        source=(
            f"embedded(n_people={n_people}, n_forget={n_forget}, "
            f"facts_per_person={facts_per_person}, n_perturbed={n_perturbed}, "
            f"n_utility={n_utility}, seed={seed})"
        ),
    )
