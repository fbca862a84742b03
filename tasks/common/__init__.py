"""Helpers shared by the task adapters; see ``tasks.common.lm`` for the LM toolkit.

Nothing heavy is imported here: import ``tasks.common.lm`` (needs ``moopt[llm]``).
"""
