"""The base layer: the registry and the exceptions every other package builds on.

Nothing here imports another part of moopt, so ``moopt.states``, ``moopt.objectives`` and
the core can all depend on it without import circles. The public names stay
``moopt.errors`` and ``moopt.registry`` (re-exports of these modules).
"""
