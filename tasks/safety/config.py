"""Configuration of the safety-alignment task (``moopt run safety``).

Example:
    >>> from moopt.tasks.safety.config import SafetyConfig
    >>> cfg = SafetyConfig(no_overrefusal=True)
    >>> cfg.objective_names()
    ['safety', 'utility', 'no_overrefusal']
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from moopt.runner.config import RunConfig

HARMFUL_EVAL_SETS = ["I-MaliciousInstructions", "Q-Harm", "I-CoNa", "I-Controversial",
                     "I-PhysicalSafetyUnsafe"]
BENIGN_EVAL_SETS = ["I-Alpaca", "I-PhysicalSafetySafe"]


class SafetyConfig(RunConfig):
    """Fields of ``moopt run safety`` (each settable as ``--name value``).

    Objectives: ``safety`` (SFT on harmful prompts answered with refusals), ``utility`` (SFT
    on benign prompts with helpful answers) and, with ``no_overrefusal``, a third one (SFT on
    safe prompts that sound dangerous, answered helpfully). ``schedule`` (default: round
    robin), ``lr_ratios`` and ``weights`` use these names.
    """

    lr: float = Field(1e-3, gt=0, description="alignment (stage 2) learning rate")
    no_overrefusal: bool = Field(False, description="add the third objective")
    batch_size: int = Field(8, ge=1, description="stage-2 batch size")
    lora: str | None = Field(None, description="LoRA adapters, e.g. 'r=8,alpha=32' "
                             "(only they are trained; saved and merged at the end)")
    scorer: str = Field("string-match-v1", description="refusal scorer (registered name)")

    # Data (data_dir unset: embedded). With data_dir: safety-tuned-llamas/ and xstest/.
    data_seed: int = Field(0, ge=0, description="seed of subsets of the real data")
    train_subset: int | None = Field(None, ge=1, description="real data: harmful train items")
    eval_subset: int | None = Field(None, ge=1, description="cap of every evaluation set")
    harmful_eval_sets: list[str] = Field(
        default_factory=lambda: list(HARMFUL_EVAL_SETS),
        description="real data: harmful evaluation sets (safety-tuned-llamas names)")
    benign_eval_sets: list[str] = Field(
        default_factory=lambda: list(BENIGN_EVAL_SETS),
        description="real data: benign evaluation sets (safety-tuned-llamas names)")

    # Model: a tiny LM trained from scratch in stage 1, or --model PATH.
    arch: Literal["gpt2", "llama"] = Field("gpt2", description="architecture of the model "
                                           "trained from scratch (without --model)")
    model_size: Literal["tiny", "small"] = Field("tiny", description="size of that model")
    tokenizer: Literal["word", "bpe"] = Field("word", description="tokenizer trained on the "
                                              "data (without --model)")
    vocab_size: int = Field(4096, ge=64, description="largest vocabulary of that tokenizer")
    max_length: int = Field(64, ge=8, description="max tokens of prompt + answer (truncated)")
    prompt_format: str = Field("auto", description="prompt format: auto, plain, chat, "
                               "tofu-phi, tofu-llama2, or a template with {question}")

    # Stage 1 (tiny model only): pre-train on the utility data so it answers benign prompts.
    pretrain_epochs: float = Field(30.0, gt=0, description="stage 1: pre-training epochs")
    pretrain_lr: float = Field(3e-3, gt=0, description="stage 1: pre-training learning rate")
    pretrain_batch_size: int = Field(16, ge=1, description="stage 1: pre-training batch size")

    # Evaluation.
    max_new_tokens: int = Field(16, ge=1, description="longest generated response (tokens)")
    eval_batch_size: int = Field(64, ge=1, description="evaluation batch size")
    report_examples: int = Field(4, ge=0, description="generated answers per set in the report")

    def objective_names(self) -> list[str]:
        names = ["safety", "utility"]
        return names + ["no_overrefusal"] if self.no_overrefusal else names

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
