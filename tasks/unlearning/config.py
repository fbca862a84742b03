"""Configuration of the LLM-unlearning task: the common run fields plus data, model,
stage-1 (fine-tuning) budget, loss pair and evaluation options.

Example:
    >>> from moopt.tasks.unlearning.config import UnlearningConfig
    >>> cfg = UnlearningConfig(loss="npo+gd", lr_ratios={"forget": 2.0})
    >>> cfg.objective_names()
    ('npo', 'gd')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from moopt.runner.config import RunConfig


class UnlearningConfig(RunConfig):
    """Fields of ``moopt run unlearning`` (each settable as ``--name value``).

    Objectives are always named ``forget`` and ``retain`` (for ``schedule``, ``lr_ratios``
    and ``weights``). ``loss`` pairs a forget and a retain objective (``npo+gd``, ``idk+ap``,
    ...); ``loss_options`` passes hyperparameters per objective (``{"npo": {"beta": 0.2}}``).
    """

    # A loss given on the command line (or in a file) drops the preset's loss_options: they
    # belong to the preset's loss (the smoke preset tunes NPO; --loss ga+kl has no NPO).
    layer_resets: ClassVar[dict[str, tuple[str, ...]]] = {
        **RunConfig.layer_resets, "loss": ("loss_options",)}

    schedule: dict[str, int] | Literal["round_robin", "joint"] | None = Field(
        default_factory=lambda: {"forget": 1, "retain": 5},
        description="forget/retain alternation (the papers' 1:5), round_robin or joint")
    lr: float = Field(1e-3, gt=0, description="unlearning learning rate")
    loss: str = Field("npo+gd", description="forget+retain objective pair")
    loss_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description='hyperparameters per objective, e.g. {"npo": '
        '{"beta": 0.2}}')
    use_reference: bool = Field(True, description="frozen copy of the target as reference")
    batch_size: int = Field(8, ge=1, description="unlearning batch size")
    lora: str | None = Field(None, description="LoRA adapters, e.g. 'r=8,alpha=32' "
                             "(only they are trained; saved and merged at the end)")

    # Data: the embedded generator (data_dir unset) or TOFU files (data_dir set).
    data_seed: int = Field(0, ge=0, description="seed of the data split / subsets")
    n_people: int = Field(20, ge=2, description="embedded: people")
    n_forget: int = Field(2, ge=1, description="embedded: people to forget")
    facts_per_person: int = Field(6, ge=1, description="embedded: facts per person")
    n_utility: int = Field(20, ge=1, description="embedded: items per utility set")
    forget_split: str = Field("forget01", description="TOFU forget file")
    task_id: str | None = Field("1", description="TOFU unlearning task in the forget file")
    retain_split: str = Field("auto", description="TOFU retain set: auto (the forget split's "
                              "own: retain99/95/90 for forget01/05/10), retain99, retain95, "
                              "or a file retain90/50/10")
    forget_subset: int | None = Field(None, ge=1, description="TOFU: cap of forget items")
    retain_subset: int | None = Field(None, ge=1, description="TOFU: cap of retain items")
    eval_subset: int | None = Field(None, ge=1, description="cap of each utility eval set")
    eval_first: int | None = Field(None, ge=1, description="keep the first N items of every "
                                   "eval set, forget included (TOFU's ds_size: 300)")

    # Model: a tiny LM trained from scratch, or --model PATH (a local HF causal LM).
    retain_model: Path | None = Field(None, description="with --model: a model fine-tuned on "
                                      "the retain split only (forget-quality reference)")
    retain_logs: Path | None = Field(None, description="with --model: that retain model's "
                                     "TOFU eval logs instead (folder of eval_log*.json)")
    prompt_format: str = Field("auto", description="prompt format: auto, plain, chat, "
                               "tofu-phi, tofu-llama2, or a template with {question}")
    arch: Literal["gpt2", "llama"] = Field("gpt2", description="architecture of the model "
                                           "trained from scratch (without --model)")
    model_size: Literal["tiny", "small"] = Field("tiny", description="size of that model")
    tokenizer: Literal["word", "bpe"] = Field("word", description="tokenizer trained on the "
                                              "data (without --model)")
    vocab_size: int = Field(4096, ge=64, description="largest vocabulary of that tokenizer")
    max_length: int = Field(96, ge=8, description="max tokens of prompt + answer")

    # Stage 1: fine-tune the target (all data) and the retain-only model.
    finetune_epochs: float = Field(60.0, gt=0, description="stage 1: fine-tuning epochs")
    finetune_lr: float = Field(3e-3, gt=0, description="stage 1: fine-tuning learning rate")
    finetune_batch_size: int = Field(16, ge=1, description="stage 1: fine-tuning batch size")

    # Evaluation.
    rouge: bool = Field(True, description="generate answers and score ROUGE-L")
    max_new_tokens: int = Field(16, ge=1, description="longest generated answer (tokens)")
    eval_batch_size: int = Field(64, ge=1, description="evaluation batch size")
    report_examples: int = Field(4, ge=0, description="generated answers shown in the report")

    @field_validator("loss")
    @classmethod
    def _pair_syntax(cls, value: str) -> str:
        if value.count("+") != 1:
            raise ValueError(f"loss must look like 'forget+retain' (e.g. 'npo+gd'), got {value!r}")
        return value

    def objective_names(self) -> tuple[str, str]:
        """The (forget, retain) objective names of ``loss`` (checked against the registry)."""
        from moopt.objectives import parse_pair

        return parse_pair(self.loss)

    @field_validator("lora")
    @classmethod
    def _check_lora(cls, value: str | None) -> str | None:
        from moopt.tasks.common.lora import check_lora_option

        return check_lora_option(value)

    @field_validator("prompt_format")
    @classmethod
    def _check_prompt_format(cls, value: str) -> str:
        from moopt.tasks.common.prompt_format import check_prompt_format

        return check_prompt_format(value)

    @field_validator("retain_split")
    @classmethod
    def _check_retain_split(cls, value: str) -> str:
        from moopt.tasks.unlearning.tofu import check_retain_split

        check_retain_split(value)
        return value
