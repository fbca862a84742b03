"""Task adapters built on moopt (unlearning, safety, multi-task vision) and shared helpers.

``tasks`` imports ``moopt``; ``moopt`` never imports ``tasks``.
"""
