"""Assemble the task's training and evaluation sets from the embedded data or a data folder.

With ``data_dir`` (the folder holding ``safety-tuned-llamas/`` and ``xstest/``):

* ``safety`` training: ``safety-tuned-llamas/training/safety_only_data_Instructions.json``
  (a deterministic ``train_subset`` of it when set);
* ``utility`` training: ``safety-tuned-llamas/training/alpaca_small.json`` when present,
  else the embedded benign tasks (the shared copy has no benign training file);
* ``no_overrefusal`` training: the embedded safe-but-scary prompts (XSTest stays held out);
* evaluation: harmful = the ``harmful_eval_sets`` files; safe / unsafe = XSTest's ``safe`` /
  ``unsafe`` prompts; benign prompts without references = the ``benign_eval_sets`` files;
  utility references = the held-out embedded benign tasks (or held-out Alpaca items).

Without ``data_dir`` everything comes from :mod:`moopt.tasks.safety.embedded`; the held-out
safe-but-scary prompts stand in for XSTest's safe prompts, and there is no unsafe-contrast
set.

Example:
    >>> from moopt.tasks.safety.config import SafetyConfig
    >>> from moopt.tasks.safety.sources import load_safety_data
    >>> data = load_safety_data(SafetyConfig())
    >>> data.source, sorted(data.train), sorted(data.eval)
    ('embedded', ['no_overrefusal', 'safety', 'utility'], ['benign', 'harmful', 'safe'])
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from moopt.tasks.safety.config import SafetyConfig
from moopt.tasks.safety.data import (
    Example,
    SafetyDataError,
    load_instruction_json,
    load_prompt_set,
    load_xstest,
    require_kinds,
)
from moopt.tasks.safety.embedded import embedded_data

#: Evaluation sets and the metric each feeds (see ``moopt.tasks.safety.evaluation``).
EVAL_SETS = {
    "harmful": "refusal_rate",
    "safe": "over_refusal_rate",
    "unsafe": "unsafe_compliance_rate",
    "benign": "utility",
    "benign_prompts": "benign_refusal_rate",
}


@dataclass
class SafetyData:
    """Training items per objective and evaluation items per set (keys of ``EVAL_SETS``)."""

    source: str
    train: dict[str, list[Example]]
    eval: dict[str, list[Example]]
    notes: list[str] = field(default_factory=list)

    def sizes(self) -> dict[str, int]:
        out = {f"train/{k}": len(v) for k, v in self.train.items()}
        out.update({f"eval/{k}": len(v) for k, v in self.eval.items()})
        return out

    def all_texts(self) -> list[str]:
        """Every instruction, input and answer (tokenizer training)."""
        texts = []
        for group in (*self.train.values(), *self.eval.values()):
            for e in group:
                texts += [e.instruction, e.input, e.answer or ""]
        return [t for t in texts if t]


def _subset(items: list[Example], n: int | None, seed: int) -> list[Example]:
    if n is None or n >= len(items):
        return list(items)
    idx = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in idx]


def load_safety_data(cfg: SafetyConfig) -> SafetyData:
    """The data of a run, validated (every objective and the harmful/benign sets non-empty)."""
    emb = embedded_data()
    cap, seed = cfg.eval_subset, cfg.data_seed
    if cfg.data_dir is None:
        data = SafetyData(
            source="embedded",
            train={"safety": emb["train"]["harmful"], "utility": emb["train"]["benign"],
                   "no_overrefusal": emb["train"]["safe_scary"]},
            eval={"harmful": _subset(emb["eval"]["harmful"], cap, seed),
                  "safe": _subset(emb["eval"]["safe_scary"], cap, seed),
                  "benign": _subset(emb["eval"]["benign"], cap, seed)},
        )
    else:
        data = _load_real(Path(cfg.data_dir), cfg, emb)
    require_kinds(data.train["safety"] + data.train["utility"], ("harmful", "benign"),
                  f"training data from {data.source}")
    for name in ("harmful", "benign"):
        if not data.eval.get(name):
            raise SafetyDataError(f"evaluation data from {data.source} has no {name!r} items")
    return data


def _load_real(root: Path, cfg: SafetyConfig, emb: dict) -> SafetyData:
    stl, xs = root / "safety-tuned-llamas", root / "xstest" / "xstest_prompts.csv"
    if not stl.is_dir() or not xs.is_file():
        found = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        shown = ", ".join(found[:8]) + (", ..." if len(found) > 8 else "")
        raise SafetyDataError(
            f"--data-dir {root} must hold safety-tuned-llamas/ and xstest/xstest_prompts.csv "
            f"(found: {shown or 'nothing'})"
        )
    cap, seed = cfg.eval_subset, cfg.data_seed
    notes = []
    harmful = load_instruction_json(stl / "training" / "safety_only_data_Instructions.json",
                                    kind="harmful")
    safety = _subset(harmful, cfg.train_subset, seed)
    alpaca = stl / "training" / "alpaca_small.json"
    if alpaca.is_file():
        items = load_instruction_json(alpaca, kind="benign")
        n_held = max(1, min(len(items) // 10, cap or 50))
        held = set(random.Random(seed + 1).sample(range(len(items)), n_held))
        utility = [e for i, e in enumerate(items) if i not in held]
        benign_ref = [e for i, e in enumerate(items) if i in held]
        notes.append(f"utility data: {alpaca.name} ({len(utility)} train, {n_held} held out)")
    else:
        utility, benign_ref = emb["train"]["benign"], emb["eval"]["benign"]
        notes.append("utility data: embedded benign tasks (no alpaca_small.json in the folder)")
    harmful_eval: list[Example] = []
    for name in cfg.harmful_eval_sets:
        harmful_eval += _subset(load_prompt_set(stl / "evaluation" / f"{name}.json",
                                                kind="harmful"), cap, seed)
    benign_prompts: list[Example] = []
    for name in cfg.benign_eval_sets:
        benign_prompts += _subset(load_prompt_set(stl / "evaluation" / f"{name}.json",
                                                  kind="benign"), cap, seed)
    xstest = load_xstest(xs)
    safe = _subset([e for e in xstest if e.kind == "safe_scary"], cap, seed)
    unsafe = _subset([e for e in xstest if e.kind == "harmful"], cap, seed)
    eval_sets = {"harmful": harmful_eval, "safe": safe, "unsafe": unsafe,
                 "benign": _subset(benign_ref, cap, seed)}
    if benign_prompts:
        eval_sets["benign_prompts"] = benign_prompts
    return SafetyData(
        source=f"data_dir {root}",
        train={"safety": safety, "utility": utility,
               "no_overrefusal": emb["train"]["safe_scary"]},
        eval=eval_sets,
        notes=notes,
    )
