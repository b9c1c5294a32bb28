"""Frozen dataclasses made on the judge's hot path without their generated __init__.

A frozen dataclass's __init__ sets each field through object.__setattr__: for the dozen-field records the
judge returns every tick (eight metric results and the judgement), that costs more than the statistics.
`build` makes the same object from every field's value; the class stays frozen for its readers. Not for
the state kept per canary: an object built so carries a dict of its own, where __init__ keeps the values
compactly, so the anytime tests' states are made by their __init__.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def build(cls: type[T], **values: Any) -> T:
    """An instance of the frozen dataclass `cls` (no __post_init__, no slots) with these field values.

    Every field must be given (a test checks the judge's calls against the classes' fields).
    """
    obj = object.__new__(cls)
    obj.__dict__.update(values)
    return obj


def complete(obj: object) -> bool:
    """Whether the object has exactly its dataclass's fields set (for the tests of `build`'s callers)."""
    return set(vars(obj)) == {f.name for f in fields(obj)}  # type: ignore[arg-type]
