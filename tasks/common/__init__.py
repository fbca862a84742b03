"""Helpers shared by the task adapters; see ``moopt.tasks.common.lm`` for the LM toolkit.

Nothing heavy is imported here: import ``moopt.tasks.common.lm`` (needs ``moopt[llm]``).
"""
