"""Safety alignment task: refuse harmful requests without over-refusing or losing utility.

Modules: ``data`` (record type and file loaders), ``embedded`` (the built-in data),
``refusal`` (refusal scorers), ``metrics``, ``sources`` (assembling a run's data),
``evaluation``, ``stage1`` (cached starting model), ``config``, ``presets``, ``adapter``
(``SafetyTask``) and ``plots`` (the refusal / over-refusal / utility trade-off plot).
Heavy dependencies (transformers, rouge-score, matplotlib) are imported only where used.
See ``docs/tasks/safety.md``.
"""
