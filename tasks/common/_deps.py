"""Lazy imports of the heavy optional dependencies, with the extra that provides them."""

from __future__ import annotations

import logging
from types import ModuleType


def require_transformers() -> ModuleType:
    """Import ``transformers`` or explain how to install it."""
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "this feature needs the 'transformers' package: pip install moopt[llm]"
        ) from err
    return transformers


def quiet_transformers() -> ModuleType:
    """``transformers``, with its per-file progress bars ("Loading weights", "Writing model
    shards") and advice messages off, so that they do not cut into moopt's own progress
    output (and stay off with ``--no-progress``). bitsandbytes' warnings are silenced too:
    ``transformers.optimization`` imports peft, which imports bitsandbytes when installed,
    and on some CPUs that import warns that it cannot fetch an optional kernel from the Hub
    (moopt never asks for it)."""
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    transformers = require_transformers()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def require_tokenizers() -> ModuleType:
    """Import ``tokenizers`` or explain how to install it."""
    try:
        import tokenizers
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "this feature needs the 'tokenizers' package: pip install moopt[llm]"
        ) from err
    return tokenizers
