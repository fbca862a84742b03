"""Config field types in the user's terms: reading a command-line value by its field's type,
and describing a type in words (for ``--help`` and error messages).

A value typed on the command line is text. It is read as the field expects: as JSON when
that gives a value the field accepts (``2`` for an int, ``null`` for an optional field) and
always for a JSON list or object (``{"forget": 1}``); else as the text itself (``--task-id
2`` gives a string field the string ``"2"``; ``--arch llama`` needs no quotes).

Example:
    >>> from moopt.runner.config import RunConfig
    >>> from moopt.runner.fieldtypes import describe_type, field_type, parse_text_value
    >>> parse_text_value(str, "2"), parse_text_value(int, "2"), parse_text_value(str | None, "null")
    ('2', 2, None)
    >>> describe_type(field_type(RunConfig, ["schedule"]))
    "a mapping of name to integer, 'round_robin', 'joint' or null"
    >>> describe_type(field_type(RunConfig, ["lr_ratios", "forget"]))
    'a number'
"""

from __future__ import annotations

import contextlib
import json
import types
import typing
from collections.abc import Sequence
from pathlib import PurePath
from typing import Any

from pydantic import TypeAdapter, ValidationError

_ADAPTERS: dict[Any, TypeAdapter] = {}


def _adapter(annotation: Any) -> TypeAdapter:
    try:
        return _ADAPTERS[annotation]
    except (KeyError, TypeError):  # TypeError: an unhashable annotation
        adapter = TypeAdapter(annotation)
        with contextlib.suppress(TypeError):
            _ADAPTERS[annotation] = adapter
        return adapter


def _members(annotation: Any) -> tuple[Any, ...]:
    """The members of a union (``X | Y``, ``Optional[X]``), else ``(annotation,)``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def field_type(config_class: type, path: Sequence[str]) -> Any:
    """The type of config key ``path`` (``["lr_ratios", "forget"]`` is a value of the
    ``lr_ratios`` mapping); ``Any`` where the path leaves the declared types."""
    fields = getattr(config_class, "model_fields", {})
    if not path or path[0] not in fields:
        return Any
    annotation = fields[path[0]].annotation
    for _ in path[1:]:
        mappings = [m for m in _members(annotation) if typing.get_origin(m) is dict]
        if not mappings:
            return Any
        args = typing.get_args(mappings[0])
        annotation = args[1] if len(args) == 2 else Any
    return annotation


def accepts(annotation: Any, value: Any) -> bool:
    """True when a field of type ``annotation`` accepts ``value`` (pydantic's lax mode)."""
    if annotation is Any:
        return True
    try:
        _adapter(annotation).validate_python(value)
    except ValidationError:
        return False
    return True


def parse_text_value(annotation: Any, text: str) -> Any:
    """``text`` read as a field of type ``annotation`` reads it (see the module docstring).
    When neither reading is accepted the JSON value (else the text) is returned, so that
    validation reports the error with the value the user typed."""
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return text
    if isinstance(parsed, (dict, list)):  # clearly meant as JSON, even for a str field
        return parsed
    if accepts(annotation, parsed) or not accepts(annotation, text):
        return parsed
    return text


_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
          type(None): "null"}


def describe_type(annotation: Any) -> str:
    """A type in words: ``dict[str, int] | None`` -> ``'a mapping of name to integer or
    null'``."""
    parts = [_describe_one(m) for m in _members(annotation)]
    parts = list(dict.fromkeys(p for p in parts if p))
    if len(parts) <= 1:
        return parts[0] if parts else "a value"
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def _describe_one(annotation: Any) -> str:
    if annotation is Any:
        return "any JSON value"
    if annotation in _WORDS:
        return _WORDS[annotation]
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return "a path"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return ", ".join(repr(a) for a in args)
    if origin is dict:
        value = _describe_one(args[1]) if len(args) == 2 else "value"
        return f"a mapping of name to {_bare(value)}"
    if origin in (list, set, frozenset) or (origin is tuple and len(args) == 2
                                            and args[1] is Ellipsis):
        return f"a list of {_bare(_describe_one(args[0]))}s" if args else "a list"
    if origin is tuple:
        return f"a list of {len(args)} {_bare(describe_type(args[0]))}s" \
            if len(set(args)) == 1 else f"a list of {len(args)} values"
    return getattr(annotation, "__name__", str(annotation))


def _bare(words: str) -> str:
    for article in ("a ", "an "):
        if words.startswith(article):
            return words[len(article):]
    return words


def metavar(annotation: Any) -> str:
    """A short placeholder for ``--help``: ``INT``, ``NUMBER``, ``JSON``, ``{a,b}``..."""
    members = [m for m in _members(annotation) if m is not type(None)]
    if len(members) == 1:
        only = members[0]
        if typing.get_origin(only) is typing.Literal:
            return "{" + ",".join(str(a) for a in typing.get_args(only)) + "}"
        simple = {str: "TEXT", int: "INT", float: "NUMBER", bool: "BOOL"}
        if only in simple:
            return simple[only]
        if isinstance(only, type) and issubclass(only, PurePath):
            return "PATH"
    return "JSON"


def show_value(value: Any) -> str:
    """A value as the user would type it: JSON (``null``, ``{"forget": 1}``), plain text
    for strings and paths."""
    if isinstance(value, str):
        return value
    if isinstance(value, PurePath):
        return str(value)
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
