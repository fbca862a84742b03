"""Data model of an unlearning benchmark: question/answer items and the sets built from them.

Both sources of data fill the same container: the TOFU loader (``tofu.py``, real files read by
path) and the project's embedded generator (``embedded.py``, no files at all).

Example:
    >>> from moopt.tasks.unlearning.data import QAItem, UnlearningData
    >>> item = QAItem("Where was Ada born?", "Ada was born in Brenmoor.",
    ...               paraphrased_answer="Brenmoor is where Ada was born.",
    ...               perturbed_answers=["Ostwick is where Ada was born."])
    >>> item.truth_ratio_base   # the answer the truth ratio compares against perturbations
    'Brenmoor is where Ada was born.'
    >>> data = UnlearningData(forget=[item], retain=[], forget_eval=[item])
    >>> data.sizes()["forget"]
    1
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields, replace

from moopt.errors import MooptError


class DataFormatError(MooptError, ValueError):
    """A data file or an item does not have the expected format (message names where)."""


@dataclass(frozen=True)
class QAItem:
    """One question with its answer and the extra answers the TOFU metrics need.

    ``paraphrased_answer`` and ``perturbed_answers`` feed the truth ratio; sets without a
    paraphrase (TOFU's real-authors and world-facts) compare the true ``answer`` with the
    perturbations instead (see ``truth_ratio_base``). ``idk_answer`` is the refusal the
    IDK / DPO losses train towards. ``task_id`` is the unlearning task of a TOFU forget
    item; ``subject`` is the entity the question is about (embedded data), when known.
    """

    question: str
    answer: str
    paraphrased_answer: str | None = None
    perturbed_answers: list[str] = field(default_factory=list)
    idk_answer: str | None = None
    task_id: str | None = None
    subject: str | None = None

    def __post_init__(self) -> None:
        for name in ("question", "answer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise DataFormatError(f"QAItem.{name} must be a non-empty string, got {value!r}")
        for name in ("paraphrased_answer", "idk_answer", "task_id", "subject"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise DataFormatError(
                    f"QAItem.{name} must be a string or None, got {type(value).__name__} "
                    f"{value!r} (question {self.question!r})"
                )
        pert = self.perturbed_answers
        if not isinstance(pert, list) or not all(isinstance(p, str) and p for p in pert):
            raise DataFormatError(
                f"QAItem.perturbed_answers must be a list of non-empty strings, got {pert!r} "
                f"(question {self.question!r})"
            )

    @property
    def truth_ratio_base(self) -> str:
        """Answer compared with the perturbed ones: the paraphrase, else the true answer."""
        return self.paraphrased_answer if self.paraphrased_answer is not None else self.answer


# Sets that the evaluation scores with truth ratios; each item needs perturbed answers.
EVAL_SETS = ("forget_eval", "retain_eval", "real_authors_eval", "world_facts_eval")


@dataclass
class UnlearningData:
    """Everything an unlearning run needs, as lists of ``QAItem``.

    Training: ``forget`` (to unlearn), ``retain`` (to keep), ``background`` (knowledge the
    model learns before unlearning but that is not part of the retain objective; the embedded
    data's stand-in for what a pretrained LLM already knows; empty for TOFU).
    Evaluation (items with perturbed answers): ``forget_eval``, ``retain_eval``,
    ``real_authors_eval``, ``world_facts_eval``. ``idk_answers``: refusal answers.
    ``source`` says where the data came from (shown in reports).
    """

    forget: list[QAItem]
    retain: list[QAItem]
    forget_eval: list[QAItem] = field(default_factory=list)
    retain_eval: list[QAItem] = field(default_factory=list)
    real_authors_eval: list[QAItem] = field(default_factory=list)
    world_facts_eval: list[QAItem] = field(default_factory=list)
    idk_answers: list[str] = field(default_factory=list)
    background: list[QAItem] = field(default_factory=list)
    source: str = "custom"

    def __post_init__(self) -> None:
        if not self.forget:
            raise DataFormatError(f"UnlearningData ({self.source}): the forget set is empty")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("source", "idk_answers"):
                continue
            bad = [i for i, x in enumerate(value) if not isinstance(x, QAItem)]
            if bad:
                raise DataFormatError(
                    f"UnlearningData.{f.name}[{bad[0]}] is a {type(value[bad[0]]).__name__}, "
                    "expected QAItem"
                )
        for name in EVAL_SETS:
            for i, item in enumerate(getattr(self, name)):
                if not item.perturbed_answers:
                    raise DataFormatError(
                        f"UnlearningData.{name}[{i}] has no perturbed answers (question "
                        f"{item.question!r}); truth ratios need at least one"
                    )
        bad_idk = [a for a in self.idk_answers if not isinstance(a, str) or not a.strip()]
        if bad_idk:
            raise DataFormatError(f"UnlearningData.idk_answers holds a bad entry {bad_idk[0]!r}")

    def sizes(self) -> dict[str, int]:
        """Number of items of every set (for logs and reports)."""
        return {f.name: len(getattr(self, f.name)) for f in fields(self) if f.name != "source"}

    def subsample_eval(self, n: int, seed: int = 0) -> UnlearningData:
        """Copy with ``retain_eval``, ``real_authors_eval`` and ``world_facts_eval`` cut to at
        most ``n`` items each (random, by ``seed``). ``forget_eval`` is kept whole because
        forget quality compares its full distribution of truth ratios."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"subsample_eval: n must be a positive int, got {n!r}")
        cut = {
            name: sample_items(getattr(self, name), n, seed)
            for name in ("retain_eval", "real_authors_eval", "world_facts_eval")
        }
        return replace(self, **cut)


def sample_items(items: list[QAItem], n: int | None, seed: int) -> list[QAItem]:
    """At most ``n`` items drawn without replacement (order kept); all when ``n`` is None."""
    if n is None or n >= len(items):
        return list(items)
    if n < 0:
        raise ValueError(f"sample size must be >= 0, got {n}")
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


def assign_idk_answers(items: list[QAItem], idk_answers: list[str], seed: int) -> list[QAItem]:
    """Give every item one refusal answer drawn from ``idk_answers`` (deterministic by seed),
    as TOFU's IDK loss does for forget questions."""
    if not idk_answers:
        return list(items)
    rng = random.Random(seed)
    return [replace(item, idk_answer=rng.choice(idk_answers)) for item in items]
