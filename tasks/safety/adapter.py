"""``SafetyTask``: safety alignment of a causal LM on the generic moopt runner.

Stage 1 (``prepare``, cached): the starting model (a tiny LM pre-trained on the utility data,
or ``--model PATH``) and its metrics. Stage 2 (the runner's loop): SFT objectives ``safety``
(harmful prompts -> refusals) and ``utility`` (benign prompts -> helpful answers), plus
``no_overrefusal`` with ``--no-overrefusal``, under the chosen sharing policy and storage.
Evaluation: refusal rate on held-out harmful prompts, over-refusal on safe prompts (XSTest
with ``--data-dir``), utility (ROUGE-L, answer NLL) on held-out benign prompts; the refusal
scorer is named in the report and the config.

Example:
    >>> from moopt.runner.discovery import get_task
    >>> task = get_task("safety")
    >>> sorted(task.presets), task.tradeoff
    (['demo', 'smoke'], ('over_refusal_rate', 'refusal_rate'))
"""

from __future__ import annotations

from pathlib import Path

from moopt.tasks.common.lora import finish_lora, wrap_if_lora
from moopt.tasks.safety.config import SafetyConfig
from moopt.tasks.safety.presets import PRESETS

from moopt.runner import (
    BatchStream,
    ReportSection,
    RunContext,
    TaskAdapter,
    TrainingSetup,
    TrainObjective,
)

REPORT_METRICS = ["refusal_rate", "over_refusal_rate", "utility", "utility_nll",
                  "full_refusal_rate", "over_full_refusal_rate", "unsafe_compliance_rate",
                  "benign_refusal_rate", "empty_rate"]


class SafetyTask(TaskAdapter):
    """Add refusals of harmful requests without over-refusing or losing utility."""

    name = "safety"
    description = "safety alignment (refusal vs over-refusal vs utility; embedded or --data-dir)"
    config_class = SafetyConfig
    presets = PRESETS
    default_preset = "smoke"
    tradeoff = ("over_refusal_rate", "refusal_rate")
    claim_metrics = ["refusal_rate", "over_refusal_rate", "utility"]
    report_metrics = REPORT_METRICS
    higher_is_better = {"refusal_rate": True, "full_refusal_rate": True,
                        "over_refusal_rate": False, "over_full_refusal_rate": False,
                        "unsafe_compliance_rate": False, "utility": True,
                        "utility_nll": False, "benign_refusal_rate": False,
                        "empty_rate": False}

    def validate(self, cfg: SafetyConfig) -> None:
        """Checks made before any file is written: a ``--model`` that is a checkpoint
        folder, and a prompt format its tokenizer can serve."""
        from moopt.tasks.common.prompt_format import check_format_for_checkpoint

        from moopt.runner.config import ConfigError

        if cfg.model is not None:
            if not Path(cfg.model).is_dir():
                raise FileNotFoundError(f"--model {str(cfg.model)!r}: no such directory")
            if not (Path(cfg.model) / "config.json").is_file():
                raise FileNotFoundError(f"--model {str(cfg.model)!r} is not a Hugging Face "
                                        "checkpoint (no config.json)")
        try:
            check_format_for_checkpoint(cfg.prompt_format, cfg.model)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def objective_names(self, cfg: SafetyConfig) -> list[str]:
        """``safety``, ``utility`` and, with ``no_overrefusal``, ``no_overrefusal``."""
        return cfg.objective_names()

    def prepare(self, cfg: SafetyConfig, ctx: RunContext):
        from moopt.tasks.safety.refusal import get_scorer
        from moopt.tasks.safety.sources import load_safety_data
        from moopt.tasks.safety.stage1 import prepare_start_model

        get_scorer(cfg.scorer)  # an unknown scorer fails before any training
        with ctx.stage("load_data"):
            data = load_safety_data(cfg)
        ctx.log(f"data: {data.source}: " + ", ".join(f"{k} {v}" for k, v in data.sizes().items()))
        return prepare_start_model(cfg, data, ctx.cache_dir, ctx)

    def build(self, cfg: SafetyConfig, ctx: RunContext) -> TrainingSetup:
        from moopt.tasks.safety.stage1 import check_tokenizer_and_context, sft_batches

        from moopt.objectives import get_objective

        prepared = ctx.prepared
        model = prepared.load_model()
        tok = prepared.tokenizer
        check_tokenizer_and_context(tok, model, cfg, str(prepared.model_dir))
        model, lora_params = wrap_if_lora(model, cfg.lora)
        sft = get_objective("sft")

        def sft_loss(batch):  # every objective is SFT; only the data differs
            return sft(model, batch)

        objectives = {}
        n_batches = {}
        for i, name in enumerate(cfg.objective_names()):
            batches = sft_batches(tok, prepared.data.train[name], batch_size=cfg.batch_size,
                                  max_length=cfg.max_length, seed=cfg.seed + i,
                                  fmt=cfg.prompt_format)
            n_batches[name] = len(batches)
            objectives[name] = TrainObjective(sft_loss, BatchStream(batches, seed=cfg.seed + i))
        # One epoch = one pass over the safety data (with the schedule's other steps).
        return TrainingSetup(model, objectives, params=lora_params,
                             steps_per_epoch=n_batches["safety"] * len(objectives),
                             extras={"responses": {}, "metrics": {}})

    def evaluate(self, setup: TrainingSetup, cfg: SafetyConfig,
                 ctx: RunContext) -> dict[str, float]:
        from moopt.tasks.safety.stage1 import evaluate_model

        prepared = ctx.prepared
        result = evaluate_model(setup.model, prepared.tokenizer, prepared.data, cfg)
        setup.extras["responses"] = result.responses
        setup.extras["metrics"] = result.metrics
        return result.metrics

    def report_extras(self, setup: TrainingSetup, cfg: SafetyConfig,
                      ctx: RunContext) -> list[ReportSection]:
        from moopt.runner.report import markdown_table

        prepared = ctx.prepared
        info = prepared.info
        rows = [f"- refusal scorer: `{cfg.scorer}`"
                + (" (string matcher; rules in tasks/safety/refusal.py and "
                   "docs/tasks/safety.md)" if cfg.scorer == "string-match-v1" else ""),
                f"- data: `{info.get('data')}`; sizes: "
                + ", ".join(f"{k} {v}" for k, v in info.get("data_sizes", {}).items()),
                *[f"- {note}" for note in info.get("notes", [])],
                f"- prompt format: `{cfg.prompt_format}`",
                f"- starting model: {'--model ' + str(cfg.model) if cfg.model else 'tiny LM'} "
                f"({info.get('n_params', 'n/a')} parameters); stage 1 "
                f"{'reused from cache' if prepared.cached else 'computed now'}, its times (s): "
                + ", ".join(f"{k} {v:.1f}" for k, v in info.get("timings", {}).items())]
        sections = [ReportSection("Setup", "\n".join(rows))]
        before = info.get("start_metrics", {})
        after = setup.extras.get("metrics") or {}
        keys = [k for k in REPORT_METRICS if k in before]
        if keys:
            table = markdown_table(["metric", "starting model", "after stage 2"],
                                   [[k, before[k], after.get(k, "-")] for k in keys])
            sections.append(ReportSection("Before and after alignment", table))
        responses = setup.extras.get("responses") or {}
        if cfg.report_examples and responses:
            lines = ["| set | prompt | response | label |", "| --- | --- | --- | --- |"]
            for name, triples in responses.items():
                for prompt, out, label in triples[: cfg.report_examples]:
                    lines.append(f"| {name} | {_cell(prompt)} | {_cell(out)} | {label} |")
            sections.append(ReportSection(f"Generated examples (scorer `{cfg.scorer}`)",
                                          "\n".join(lines)))
        tokenizer = ctx.prepared.tokenizer
        lora_note = finish_lora(setup.model, ctx.run_dir, tokenizer) if cfg.lora else ""
        if lora_note:
            sections.append(ReportSection("LoRA", lora_note))
        return sections


def _cell(text: str, limit: int = 160) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
