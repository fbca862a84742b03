"""LLM unlearning task: data (TOFU files or the embedded generator) and TOFU metrics.

See docs/tasks/unlearning_data.md for the data formats, the generator and the metrics.
"""

from moopt.tasks.unlearning.data import DataFormatError, QAItem, UnlearningData
from moopt.tasks.unlearning.embedded import make_embedded
from moopt.tasks.unlearning.evaluation import UnlearningEval, evaluate_unlearning
from moopt.tasks.unlearning.tofu import load_tofu

__all__ = [
    "DataFormatError",
    "QAItem",
    "UnlearningData",
    "UnlearningEval",
    "evaluate_unlearning",
    "load_tofu",
    "make_embedded",
]
