"""Check values read from YAML or JSON against ordinary Python annotations, naming the field.

The config sections are dataclasses and the checkpoint card is a ``TypedDict``; their
annotations already say what each field holds. :func:`conform` reads them, plus a
small table of numeric :class:`Range` s, so a new field needs no checking code of its
own. Values come back converted (lists into tuples, whole floats into ints, mappings
into dataclasses); anything that does not fit raises :class:`SchemaViolation`, whose
message names the field, and the caller adds the file and raises its own error.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import reprlib
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict

_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = 4


class SchemaViolation(ValueError):
    """A value that doesn't fit its annotation; the message names the field and the problem."""


@dataclass(frozen=True)
class Range:
    """Allowed numbers: ``low``/``high`` bounds (None: unbounded), each inclusive or not."""

    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def __contains__(self, number: float) -> bool:
        if self.low is not None and (number < self.low or
                                     (number == self.low and not self.low_inclusive)):
            return False
        return self.high is None or not (number > self.high or
                                         (number == self.high and not self.high_inclusive))

    def __str__(self) -> str:
        if self.high is None:
            return f"at least {self.low}" if self.low_inclusive else f"greater than {self.low}"
        if self.low is None:
            return f"at most {self.high}" if self.high_inclusive else f"less than {self.high}"
        opening, closing = "[" if self.low_inclusive else "(", "]" if self.high_inclusive else ")"
        return f"in {opening}{self.low}, {self.high}{closing}"


#: ranges of numeric fields, keyed by (the dataclass or TypedDict, field name); for a
#: list-valued field the range holds for each element
Ranges = Mapping[tuple[type, str], Range]


def conform(value: Any, annotation: Any, field: str, ranges: Ranges | None = None) -> Any:
    """``value`` converted to ``annotation``, or :class:`SchemaViolation` naming ``field``."""
    return _conform(value, annotation, field, ranges or {}, None)


def _conform(value: Any, annotation: Any, field: str, ranges: Ranges, limit: Range | None
             ) -> Any:
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]  # only "X | None" is used
        return _conform(value, inner, field, ranges, limit)
    if origin is Literal:
        if isinstance(value, bool) and {"on", "off"} <= set(args):
            value = "on" if value else "off"  # YAML 1.1 reads a bare on / off as true / false
        if value not in args:
            choices = ", ".join(map(str, args))
            raise SchemaViolation(f"{field} is {_SHORT.repr(value)}; choose one of {choices}.")
        return value
    if annotation in _SCALARS:
        return _scalar(value, annotation, field, limit)
    if origin in (tuple, list):
        return _sequence(value, annotation, field, ranges, limit)
    if origin is dict:
        mapping = _mapping(value, annotation, field)
        return {key: _conform(item, args[1], f"{field}.{key}", ranges, limit)
                for key, item in mapping.items()}
    if dataclasses.is_dataclass(annotation):
        return _dataclass(value, annotation, field, ranges)
    if is_typeddict(annotation):
        return _typeddict(value, annotation, field, ranges)
    raise TypeError(f"no schema rule for {annotation!r} (field {field})")


_SCALARS = (bool, int, float, str)


def _scalar(value: Any, kind: type, field: str, limit: Range | None) -> Any:
    if kind is str and isinstance(value, os.PathLike):
        return os.fspath(value)
    if kind is bool or kind is str:
        if not isinstance(value, kind):
            raise _wrong(value, kind, field)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaViolation(f"{field} must be a number, got {_SHORT.repr(value)}.")
    if not math.isfinite(value):
        raise SchemaViolation(f"{field} must be a finite number, got {value}.")
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise SchemaViolation(f"{field} must be a whole number, got {value!r}.")
    value = kind(value)
    if limit is not None and value not in limit:
        raise SchemaViolation(f"{field} must be {limit}, got {value}.")
    return value


def _sequence(value: Any, annotation: Any, field: str, ranges: Ranges,
              limit: Range | None) -> Any:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
        raise _wrong(value, annotation, field)
    args = get_args(annotation)
    if get_origin(annotation) is list:
        items = [args[0]] * len(value)
    elif len(args) == 2 and args[1] is Ellipsis:
        if not value:
            raise SchemaViolation(f"{field} must hold at least one value, got none.")
        items = [args[0]] * len(value)
    elif len(value) != len(args):
        raise _wrong(value, annotation, field)
    else:
        items = list(args)
    converted = None
    if items and all(kind is items[0] for kind in items) and items[0] in _SCALARS:
        try:  # fast path for long lists of numbers (a card's loss history)
            converted = [_scalar(item, items[0], field, limit) for item in value]
        except SchemaViolation:
            pass  # the loop below names the element
    if converted is None:
        converted = [_conform(item, kind, f"{field}[{index}]", ranges, limit)
                     for index, (item, kind) in enumerate(zip(value, items, strict=True))]
    return converted if get_origin(annotation) is list else tuple(converted)


def _mapping(value: Any, annotation: Any, field: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise _wrong(value, annotation, field)
    keys = [key for key in value if not isinstance(key, str)]
    if keys:
        raise SchemaViolation(f"{field} has key {keys[0]!r}; keys must be text.")
    return value


def _join(field: str, name: str) -> str:
    return f"{field}.{name}" if field else name


def _dataclass(value: Any, kind: type, field: str, ranges: Ranges) -> Any:
    """A mapping becomes an instance (absent fields keep their defaults); an instance is
    checked field by field in place."""
    hints = _hints(kind)
    if isinstance(value, kind):
        for name, annotation in hints.items():
            checked = _conform(getattr(value, name), annotation, _join(field, name), ranges,
                               ranges.get((kind, name)))
            setattr(value, name, checked)
        return value
    raw = _mapping(value, kind, field)
    unknown = set(raw) - set(hints)
    if unknown:
        raise SchemaViolation(
            f"{field or 'the mapping'} has unknown key(s) {sorted(unknown)}; "
            f"known: {sorted(hints)}."
        )
    return kind(**{name: _conform(item, hints[name], _join(field, name), ranges,
                                  ranges.get((kind, name)))
                   for name, item in raw.items()})


def _typeddict(value: Any, kind: type, field: str, ranges: Ranges) -> dict[str, Any]:
    """Known keys are checked, required ones must be there; unknown keys pass untouched
    (cards written by newer versions may carry more)."""
    raw = dict(_mapping(value, kind, field))
    missing = sorted(kind.__required_keys__ - set(raw))
    if missing:
        raise SchemaViolation(f"{field or 'the mapping'} lacks {', '.join(missing)}.")
    for name, annotation in _hints(kind).items():
        if name in raw:
            raw[name] = _conform(raw[name], annotation, _join(field, name), ranges,
                                 ranges.get((kind, name)))
    return raw


@functools.cache
def _hints(kind: type) -> dict[str, Any]:
    hints = get_type_hints(kind)
    if dataclasses.is_dataclass(kind):
        return {f.name: hints[f.name] for f in dataclasses.fields(kind)}
    return hints


def _wrong(value: Any, annotation: Any, field: str) -> SchemaViolation:
    return SchemaViolation(f"{field} must be {describe(annotation)}, got {_SHORT.repr(value)}.")


def describe(annotation: Any, plural: bool = False) -> str:
    """What ``annotation`` asks for, in words: "a list of 2 numbers"."""
    origin, args = get_origin(annotation), get_args(annotation)
    words = {bool: ("true or false", "true/false values"), int: ("a whole number",
             "whole numbers"), float: ("a number", "numbers"), str: ("a string", "strings")}
    if annotation in words:
        return words[annotation][plural]
    if origin is Literal:
        return ("one of " if not plural else "values among ") + ", ".join(map(str, args))
    if origin in (Union, types.UnionType):
        (inner,) = [arg for arg in args if arg is not type(None)]
        return f"{describe(inner, plural)} or null"
    if origin in (tuple, list):
        variable = origin is list or (len(args) == 2 and args[1] is Ellipsis)
        count = "" if variable else f"{len(args)} "
        return f"{'lists' if plural else 'a list'} of {count}{describe(args[0], True)}"
    return "mappings" if plural else "a mapping"
