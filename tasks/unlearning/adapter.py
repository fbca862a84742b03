"""``UnlearningTask``: LLM unlearning (TOFU-style) on the generic moopt runner.

Stage 1 (``prepare``, cached): a target model that knows the forget and retain facts, and
a retain-only model (whose truth ratios on the forget set define forget quality): both
trained from scratch for the tiny models, or ``--model PATH`` as the target with
``--retain-model PATH`` / ``--retain-logs DIR`` as the reference (nothing trained). Stage 2
(the runner's loop): unlearn with a forget+retain loss pair (``--loss npo+gd``), a sharing
policy, a storage backend and a schedule (paper default forget:retain = 1:5), with a frozen
copy of the target as reference model for NPO/DPO/KL. Stage 3 (``evaluate``): TOFU metrics
(forget quality, model utility, per-set probability / ROUGE-L / truth ratio), and TOFU's
four eval-log files under ``OUT/tofu_logs/`` (``tofu_logs/step_N/`` per evaluation with
``eval_every``; the stage-1 models' logs in ``tofu_logs/target`` and
``tofu_logs/retain_model``).

Data: the embedded generator by default, TOFU files with ``--data-dir``.

Example:
    >>> from moopt.runner.discovery import get_task
    >>> task = get_task("unlearning")
    >>> sorted(task.presets)
    ['demo', 'paper', 'smoke', 'tofu']
    >>> task.tradeoff
    ('forget_quality', 'model_utility')
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from moopt.tasks.common.lora import finish_lora, wrap_if_lora
from moopt.tasks.common.prompt_format import check_format_for_checkpoint
from moopt.tasks.unlearning.config import UnlearningConfig
from moopt.tasks.unlearning.data import UnlearningData
from moopt.tasks.unlearning.placement import follow, load_dtype
from moopt.tasks.unlearning.presets import PRESETS

from moopt.runner import (
    BatchStream,
    ReportSection,
    RunContext,
    TaskAdapter,
    TrainingSetup,
    TrainObjective,
)
from moopt.runner.config import ConfigError

REPORT_METRICS = [
    "forget_quality", "model_utility", "forget/probability", "forget/rouge_l",
    "forget/truth_ratio", "retain/probability", "retain/rouge_l", "real_authors/probability",
    "world_facts/probability",
]


def load_data(cfg: UnlearningConfig) -> UnlearningData:
    """The embedded data (no ``data_dir``) or TOFU files, cut to the config's sizes.

    TOFU caps (``forget_subset``, ``retain_subset``, ``eval_subset``) keep the forget set and
    its evaluation set paired, and fill the retain subset with the retain-evaluation items
    first (a retain item the model never saw says nothing about retained knowledge). A model
    trained from scratch (no ``--model``) also learns the real-authors and world-facts
    answers in stage 1 as background knowledge, as the embedded data does: a pretrained LLM
    would know them.
    """
    if cfg.data_dir is None:
        from moopt.tasks.unlearning.embedded import make_embedded

        data = make_embedded(n_people=cfg.n_people, n_forget=cfg.n_forget,
                             facts_per_person=cfg.facts_per_person, n_utility=cfg.n_utility,
                             seed=cfg.data_seed)
        if cfg.eval_first is not None:
            data = first_eval_items(data, cfg.eval_first)
        if cfg.eval_subset is not None:
            data = data.subsample_eval(cfg.eval_subset, seed=cfg.data_seed)
        return data
    from moopt.tasks.unlearning.data import QAItem, sample_items
    from moopt.tasks.unlearning.tofu import load_tofu

    data = load_tofu(cfg.data_dir, cfg.forget_split, None, cfg.data_seed,
                     task_id=cfg.task_id, retain_split=cfg.retain_split)
    if cfg.eval_first is not None:
        data = first_eval_items(data, cfg.eval_first)
    forget, forget_eval = data.forget, data.forget_eval
    if cfg.forget_subset is not None:
        forget = sample_items(forget, cfg.forget_subset, cfg.data_seed)
        keys = {(it.question, it.answer) for it in forget}
        forget_eval = [it for it in forget_eval if (it.question, it.answer) in keys]
    data = replace(data, forget=forget, forget_eval=forget_eval)
    if cfg.eval_subset is not None:
        data = data.subsample_eval(cfg.eval_subset, seed=cfg.data_seed)
    retain = data.retain
    if cfg.retain_subset is not None:
        eval_keys = {(it.question, it.answer) for it in data.retain_eval}
        seen = [it for it in retain if (it.question, it.answer) in eval_keys]
        rest = [it for it in retain if (it.question, it.answer) not in eval_keys]
        retain = seen[: cfg.retain_subset] + sample_items(
            rest, max(0, cfg.retain_subset - len(seen)), cfg.data_seed)
    background = data.background
    if cfg.model is None:
        background = [QAItem(it.question, it.answer)
                      for it in data.real_authors_eval + data.world_facts_eval]
    return replace(data, retain=retain, background=background,
                   source=data.source + f" [forget {len(forget)}, retain {len(retain)}]")


def first_eval_items(data: UnlearningData, n: int) -> UnlearningData:
    """``data`` with every evaluation set, forget included, cut to its first ``n`` items
    (TOFU's ``ds_size``)."""
    from moopt.tasks.unlearning.data import EVAL_SETS

    return replace(data, **{name: getattr(data, name)[:n] for name in EVAL_SETS})


class UnlearningTask(TaskAdapter):
    """Unlearn a forget set while keeping utility (objectives ``forget`` and ``retain``)."""

    name = "unlearning"
    description = "LLM unlearning (TOFU metrics; embedded data or --data-dir TOFU)"
    config_class = UnlearningConfig
    presets = PRESETS
    default_preset = "smoke"
    tradeoff = ("forget_quality", "model_utility")
    report_metrics = REPORT_METRICS
    higher_is_better = {"forget_quality": True, "model_utility": True,
                        "forget/probability": False, "forget/rouge_l": False,
                        "forget/truth_ratio": True}

    def validate(self, cfg: UnlearningConfig) -> None:
        """Loss names, reference model, data folder, model paths, the forget-quality
        reference and the prompt format, checked before any file is written (the data files
        themselves are read in ``prepare``)."""
        self.objectives(cfg)
        if cfg.data_dir is not None:
            from moopt.tasks.unlearning.tofu import check_retain_split, resolve_tofu_dir

            resolve_tofu_dir(cfg.data_dir)
            check_retain_split(cfg.retain_split, cfg.forget_split)
        for flag, path in (("--model", cfg.model), ("--retain-model", cfg.retain_model)):
            if path is not None:
                check_checkpoint(flag, Path(path))
        check_reference(cfg)
        try:
            check_format_for_checkpoint(cfg.prompt_format, cfg.model)
            if cfg.retain_model is not None:
                check_format_for_checkpoint(cfg.prompt_format, cfg.retain_model,
                                            "--retain-model")
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def objective_names(self, cfg: UnlearningConfig) -> list[str]:
        """Every run trains the objectives ``forget`` and ``retain`` (whatever the loss)."""
        return ["forget", "retain"]

    def prepare(self, cfg: UnlearningConfig, ctx: RunContext):
        from moopt.tasks.unlearning.stage1 import prepare_models

        self.validate(cfg)
        with ctx.stage("load_data"):
            data = load_data(cfg)
        ctx.log(f"data: {data.source}: " + ", ".join(
            f"{k} {v}" for k, v in data.sizes().items() if v))
        return prepare_models(cfg, data, ctx.cache_dir, ctx)

    @staticmethod
    def objectives(cfg: UnlearningConfig):
        """The bound (forget, retain) objectives of ``cfg.loss``; fails on bad names,
        unknown hyperparameters, or a reference-model loss with ``use_reference`` off."""
        from moopt.objectives import get_objective

        forget_name, retain_name = cfg.objective_names()
        opts = dict(cfg.loss_options)
        unknown = sorted(set(opts) - {forget_name, retain_name})
        if unknown:
            raise ConfigError(f"config key 'loss_options' names {unknown}, which are not in "
                              f"loss {cfg.loss!r}")
        pair = (get_objective(forget_name, **opts.get(forget_name, {})),
                get_objective(retain_name, **opts.get(retain_name, {})))
        needs_ref = [o.name for o in pair if o.info.needs_reference]
        if needs_ref and not cfg.use_reference:
            raise ConfigError(f"loss {cfg.loss!r}: {needs_ref} need(s) a reference model (the "
                              "model before unlearning), but use_reference is false")
        return pair

    def build(self, cfg: UnlearningConfig, ctx: RunContext) -> TrainingSetup:
        from moopt.tasks.unlearning.lm_io import training_batches

        from moopt.objectives import ObjectiveContext

        prepared = ctx.prepared
        forget_obj, retain_obj = self.objectives(cfg)
        forget_name, retain_name = forget_obj.name, retain_obj.name
        needs_ref = [o.name for o in (forget_obj, retain_obj) if o.info.needs_reference]
        model = prepared.load_target(load_dtype(cfg))
        ref = None
        if needs_ref:  # on the run's device; the runner places the trained model itself
            ref = ctx.place_frozen(copy.deepcopy(model)).eval()
        # LoRA wraps the model after the reference copy, which stays the plain base model.
        model, lora_params = wrap_if_lora(model, cfg.lora)
        octx = ObjectiveContext(ref_model=ref)
        tok = prepared.tokenizer
        data = prepared.data
        fmt = prepared.prompt_format
        with_idk = {"forget": forget_name in ("idk", "dpo"), "retain": retain_name == "ap"}
        fb = training_batches(tok, data.forget, batch_size=cfg.batch_size,
                              max_length=cfg.max_length, seed=cfg.seed,
                              with_idk=with_idk["forget"], fmt=fmt)
        rb = training_batches(tok, data.retain, batch_size=cfg.batch_size,
                              max_length=cfg.max_length, seed=cfg.seed + 1,
                              with_idk=with_idk["retain"], fmt=fmt)

        def forget_loss(batch):
            follow(ref, model)  # the runner may have moved or cast the model after build
            return forget_obj(model, batch, octx)

        def retain_loss(batch):
            follow(ref, model)
            return retain_obj(model, batch, octx)

        # One epoch = one pass over the forget set, with the schedule's retain steps between.
        sched = cfg.schedule
        per_forget = sum(sched.values()) / max(sched.get("forget", 1), 1) \
            if isinstance(sched, dict) else (1 if sched == "joint" else 2)
        return TrainingSetup(
            model,
            {"forget": TrainObjective(forget_loss, BatchStream(fb, seed=cfg.seed)),
             "retain": TrainObjective(retain_loss, BatchStream(rb, seed=cfg.seed + 1))},
            params=lora_params,
            steps_per_epoch=max(1, round(len(fb) * per_forget)),
            stateful={"tofu_log_evals": EvalCounter()},
            extras={"tokenizer": tok, "ref_model": ref, "answers": {}},
        )

    def evaluate(self, setup: TrainingSetup, cfg: UnlearningConfig,
                 ctx: RunContext) -> dict[str, float]:
        from moopt.tasks.unlearning.stage1 import evaluate

        prepared = ctx.prepared
        result = evaluate(setup.model, prepared.tokenizer, prepared.data, cfg,
                          prepared.retain_truth_ratios)
        setup.extras["answers"] = result.answers
        counter = setup.stateful.get("tofu_log_evals")
        if counter is not None:
            counter.count += 1
        if ctx.is_main and ctx.run_dir is not None:
            write_run_logs(result, setup, cfg, ctx, counter.count if counter else 1)
        return result.metrics

    def report_extras(self, setup: TrainingSetup, cfg: UnlearningConfig,
                      ctx: RunContext) -> list[ReportSection]:
        prepared = ctx.prepared
        info = prepared.info
        sections = []
        rows = [f"- data: `{info.get('data')}`",
                f"- model parameters: {info.get('n_params', 'n/a')}",
                f"- target: {'--model ' + str(cfg.model) if cfg.model else 'tiny LM'}; "
                "forget-quality reference: "
                + info.get("reference", "retain-only model trained here"),
                f"- prompt format: `{prepared.prompt_format.name}`; TOFU eval logs in "
                "`tofu_logs/` (`moopt tofu-score`)",
                f"- stage 1 {'reused from cache' if prepared.cached else 'computed now'}; "
                "its original times (s): " + ", ".join(
                    f"{k} {v:.1f}" for k, v in info.get("timings", {}).items()),
                "- scorer: TOFU metrics (truth ratio, ROUGE-L recall via rouge-score, forget "
                "quality = KS-test p-value vs the retain-only model)"]
        sections.append(ReportSection("Stage 1 (target and forget-quality reference)",
                                      "\n".join(rows)))
        before = info.get("target_metrics", {})
        retain_m = info.get("retain_model_metrics", {})
        keys = [k for k in REPORT_METRICS if k in before or k in retain_m]
        if keys:
            from moopt.runner.report import markdown_table

            table = markdown_table(
                ["metric", "target (before)", "retain-only model"],
                [[k, before.get(k, "-"), retain_m.get(k, "-")] for k in keys])
            sections.append(ReportSection("Before unlearning", table))
        answers = setup.extras.get("answers") or {}
        if cfg.report_examples and answers.get("forget"):
            lines = ["| question | true answer | answer after unlearning |",
                     "| --- | --- | --- |"]
            for item, ans in list(zip(prepared.data.forget_eval,
                                      answers["forget"]))[: cfg.report_examples]:
                lines.append(f"| {_cell(item.question)} | {_cell(item.answer)} | {_cell(ans)} |")
            sections.append(ReportSection("Generated answers on the forget set",
                                          "\n".join(lines)))
        lora_note = finish_lora(setup.model, ctx.run_dir, prepared.tokenizer) if cfg.lora else ""
        if lora_note:
            sections.append(ReportSection("LoRA", lora_note))
        return sections


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def check_reference(cfg: UnlearningConfig) -> None:
    """With ``--model``, exactly one forget-quality reference (``--retain-model`` or
    ``--retain-logs``) must be given; without it, neither."""
    given = [f for f, v in (("--retain-model", cfg.retain_model),
                            ("--retain-logs", cfg.retain_logs)) if v is not None]
    if cfg.model is None:
        if given:
            raise ConfigError(f"{given[0]} needs --model: without it the task trains its own "
                              "retain-only model from scratch")
        return
    if not given:
        raise ConfigError(
            "--model needs a forget-quality reference: pass --retain-model PATH (a model "
            "fine-tuned on the retain split only, e.g. TOFU's retain99/95/90 model for "
            "forget01/05/10) or --retain-logs DIR (that model's TOFU eval logs, "
            "eval_log_forget.json ...); moopt never derives it from the target")
    if len(given) == 2:
        raise ConfigError("pass one of --retain-model and --retain-logs, not both")
    if cfg.retain_logs is not None:
        from moopt.tasks.unlearning.tofu_logs import read_log
        from moopt.tasks.unlearning.tofu_score import RATIO_KEYS

        read_log(cfg.retain_logs, "forget", RATIO_KEYS)


def check_checkpoint(flag: str, path: Path) -> None:
    """A local HF checkpoint directory, checked from its files without loading it."""
    if not path.is_dir():
        raise FileNotFoundError(f"{flag} {str(path)!r}: no such directory")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{flag} {str(path)!r} is not a Hugging Face checkpoint (no config.json)")


class EvalCounter:
    """How many evaluations a run has made; saved in checkpoints, so that a resumed run
    names its TOFU-log step folders as an uninterrupted one would."""

    def __init__(self) -> None:
        self.count = 0

    def state_dict(self) -> dict[str, int]:
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.count = int(state["count"])


def write_run_logs(result: Any, setup: TrainingSetup, cfg: UnlearningConfig, ctx: RunContext,
                   n_evals: int) -> None:
    """The TOFU logs of an evaluation: ``tofu_logs/`` for the final one, and with
    ``eval_every`` also ``tofu_logs/step_N/`` for each (N: the optimizer step). The first
    call also copies the stage-1 logs (``target``, ``retain_model``) from the cache."""
    from moopt.tasks.unlearning.stage1 import STAGE1_LOGS
    from moopt.tasks.unlearning.tofu_logs import write_logs

    from moopt.runner.loop import total_steps

    root = Path(ctx.run_dir) / "tofu_logs"
    entry = getattr(ctx.prepared, "entry", None)
    for name in STAGE1_LOGS:
        source, dest = (entry / "tofu_logs" / name if entry else None), root / name
        if source is not None and source.is_dir() and not dest.exists():
            shutil.copytree(source, dest)
    n_steps = total_steps(cfg, setup)
    step = min(n_evals * cfg.eval_every, n_steps) if cfg.eval_every else n_steps
    if cfg.eval_every:
        write_logs(result, root / f"step_{step}")
    if step >= n_steps:
        write_logs(result, root)

