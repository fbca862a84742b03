"""Integrations with other training frameworks (each imports its framework lazily).

* :mod:`moopt.integrations.hf`: Hugging Face ``transformers.Trainer``
  (``pip install moopt[llm]``).
"""
