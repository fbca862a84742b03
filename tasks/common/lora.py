"""PEFT LoRA for the LLM tasks: parse ``--lora``, wrap a model, step only the adapters,
save them, merge them into the base weights at the end (``pip install moopt[peft]``).

Spec syntax (``--lora``): comma-separated ``key=value``:
``r`` (rank, int >= 1, default 8), ``alpha`` (scaling numerator, > 0, default 16),
``dropout`` (in [0, 1), default 0), ``targets`` (module names joined by ``+``, default: PEFT's
choice for the model type, else every linear layer except the output head), ``bias``
(``none``, ``all`` or ``lora_only``; default ``none``).

Example:
    >>> from moopt.tasks.common.lora import parse_lora_spec
    >>> parse_lora_spec("r=8,alpha=32,targets=q_proj+v_proj")
    LoraSpec(r=8, alpha=32.0, dropout=0.0, targets=('q_proj', 'v_proj'), bias='none')
    >>> parse_lora_spec("r=0")
    Traceback (most recent call last):
    ...
    ValueError: --lora 'r=0': r must be an int >= 1, got '0'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

KEYS = ("r", "alpha", "dropout", "targets", "bias")
BIASES = ("none", "all", "lora_only")


@dataclass(frozen=True)
class LoraSpec:
    """What ``--lora`` asks for (see the module docstring)."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] | None = None
    bias: str = "none"


def require_peft() -> ModuleType:
    """Import ``peft`` or explain how to install it."""
    try:
        import peft
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("LoRA needs the 'peft' package: pip install moopt[peft]") from err
    return peft


def parse_lora_spec(text: str | LoraSpec) -> LoraSpec:
    """A :class:`LoraSpec` from ``"r=8,alpha=32,..."``; every error names the bad part."""
    if isinstance(text, LoraSpec):
        return text
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"--lora needs key=value pairs such as 'r=8,alpha=32', got {text!r}")
    values: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not key or not value:
            raise ValueError(f"--lora {text!r}: {part.strip()!r} is not key=value")
        if key not in KEYS:
            raise ValueError(f"--lora {text!r}: unknown key {key!r}; keys are {', '.join(KEYS)}")
        if key in values:
            raise ValueError(f"--lora {text!r}: key {key!r} is given twice")
        values[key] = value

    def number(key: str, kind: type, ok: Any, need: str) -> Any:
        raw = values[key]
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(f"--lora {text!r}: {key} must be {need}, got {raw!r}") from None
        if not ok(value):
            raise ValueError(f"--lora {text!r}: {key} must be {need}, got {raw!r}")
        return value

    spec: dict[str, Any] = {}
    if "r" in values:
        spec["r"] = number("r", int, lambda v: v >= 1, "an int >= 1")
    if "alpha" in values:
        spec["alpha"] = number("alpha", float, lambda v: v > 0, "a number > 0")
    if "dropout" in values:
        spec["dropout"] = number("dropout", float, lambda v: 0 <= v < 1, "a number in [0, 1)")
    if "targets" in values:
        names = tuple(n.strip() for n in values["targets"].split("+"))
        if not all(names):
            raise ValueError(f"--lora {text!r}: targets must be module names joined by '+', "
                             f"got {values['targets']!r}")
        spec["targets"] = names
    if "bias" in values:
        if values["bias"] not in BIASES:
            raise ValueError(f"--lora {text!r}: bias must be one of {BIASES}, got "
                             f"{values['bias']!r}")
        spec["bias"] = values["bias"]
    return LoraSpec(**spec)


def default_targets(model: torch.nn.Module) -> list[str]:
    """PEFT's default target modules for the model type, else every linear-like layer
    (``nn.Linear``, GPT-2's ``Conv1D``) except the output head."""
    peft = require_peft()
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    mapping = getattr(peft.utils, "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING", {})
    if model_type in mapping:
        return list(mapping[model_type])
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
            leaf = name.rsplit(".", 1)[-1]
            if leaf not in ("lm_head", "score", "classifier"):
                names.add(leaf)
    if not names:
        raise ValueError(f"no linear layers found in {type(model).__name__} to put LoRA "
                         "adapters on; name them with targets=...")
    return sorted(names)


def apply_lora(model: torch.nn.Module, spec: str | LoraSpec) -> torch.nn.Module:
    """``model`` wrapped with LoRA adapters (a ``peft.PeftModel``): base weights frozen, only
    the adapters (and biases if ``bias`` says so) require gradients."""
    peft = require_peft()
    spec = parse_lora_spec(spec)
    targets = list(spec.targets) if spec.targets else default_targets(model)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in present]
    if missing:
        raise ValueError(f"LoRA targets {missing} are not modules of {type(model).__name__}; "
                         f"e.g. {sorted(present - {''})[:8]}")
    # GPT-2's Conv1D stores weights transposed; PEFT must know (it warns and guesses else).
    conv1d = any(type(m).__name__ == "Conv1D" and n.rsplit(".", 1)[-1] in targets
                 for n, m in model.named_modules())
    config = peft.LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                             target_modules=targets, bias=spec.bias, fan_in_fan_out=conv1d)
    return peft.get_peft_model(model, config)


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters the optimizer should step (those requiring gradients)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    return params


def save_adapters(model: torch.nn.Module, directory: str | Path) -> Path:
    """Write the adapters (``adapter_config.json`` + weights) to ``directory``."""
    if not hasattr(model, "peft_config"):
        raise TypeError(f"save_adapters needs a LoRA-wrapped model, got {type(model).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    return directory


def merge(model: torch.nn.Module) -> torch.nn.Module:
    """The base model with the adapters folded into its weights (no PEFT layers left)."""
    if not hasattr(model, "merge_and_unload"):
        raise TypeError(f"merge needs a LoRA-wrapped model, got {type(model).__name__}")
    return model.merge_and_unload()


# ------------------------------------------------- the task adapters' `--lora` option
def check_lora_option(value: str | None) -> str | None:
    """Validate a task config's ``lora`` field (``None`` = full fine-tuning)."""
    if value is None or value == "":
        return None
    parse_lora_spec(value)
    return value


def wrap_if_lora(model: torch.nn.Module, spec: str | None
                 ) -> tuple[torch.nn.Module, list[torch.nn.Parameter] | None]:
    """``(model, None)`` without a spec; else the LoRA-wrapped model and the adapter
    parameters, the only ones the optimizer should step."""
    if not spec:
        return model, None
    wrapped = apply_lora(model, spec)
    return wrapped, trainable_parameters(wrapped)


def finish_lora(model: torch.nn.Module, run_dir: Path | None, tokenizer: Any = None) -> str:
    """At the end of a LoRA run: save the adapters to ``run_dir/lora_adapters``, merge them
    into the base weights and save the merged model to ``run_dir/merged_model``. Returns a
    markdown line for the report."""
    if run_dir is None or not hasattr(model, "peft_config"):
        return ""
    from moopt.tasks.common._deps import quiet_transformers

    quiet_transformers()  # no "Writing model shards" bars in the run's output
    adapters = save_adapters(model, Path(run_dir) / "lora_adapters")
    merged = merge(model)
    merged_dir = Path(run_dir) / "merged_model"
    merged.save_pretrained(merged_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(merged_dir)
    return f"- LoRA adapters saved to `{adapters}`; merged model saved to `{merged_dir}`"
