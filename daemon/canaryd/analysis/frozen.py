"""Frozen dataclasses made on the judge's hot path without their generated __init__.

A frozen dataclass's __init__ sets each field through object.__setattr__: for the dozen-field records the
judge returns every tick (eight metric results and the judgement), that costs more than the statistics.
`build` makes the same object from every field's value; the class stays frozen for its readers. Not for
the state kept per canary: an object built so carries a dict of its own, where __init__ keeps the values
compactly, so the anytime tests' states are made by their __init__.

A field declared `Lazy` may be given to `build` as a maker instead (`_make_<name>=maker`): the text of a
verdict that nobody reads is not formatted. Its first read calls the maker and keeps the value; to every
reader (getattr, dataclasses' eq, repr, replace, asdict, copy and pickle) it is the field's value.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


class Lazy:
    """A non-data descriptor for a field of a built record: the instance's own value wins once it is set."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.maker = f"_make_{name}"

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if obj is None:
            return self
        d = obj.__dict__
        maker = d.get(self.maker)
        if maker is None:  # made meanwhile (the value is set before the maker goes), or never given
            try:
                return d[self.name]
            except KeyError:
                raise AttributeError(self.name) from None
        value = d[self.name] = maker()
        d.pop(self.maker, None)
        return value


def lazy_fields(cls: type[T], *names: str) -> type[T]:
    """Declares these fields of the frozen dataclass `cls` Lazy, and makes its copies and pickles hold values."""
    for name in names:
        setattr(cls, name, Lazy(name))

    def __getstate__(self: object) -> dict[str, Any]:
        for name in names:
            getattr(self, name)  # the value made, the maker gone
        return dict(self.__dict__)

    cls.__getstate__ = __getstate__  # type: ignore[attr-defined]
    return cls


def build(cls: type[T], **values: Any) -> T:
    """An instance of the frozen dataclass `cls` (no __post_init__, no slots) with these field values; a field
    `cls` declares Lazy (see lazy_fields) may be given as `_make_<field>=maker` instead, called on first read.

    Every field must be given (a test checks the judge's calls against the classes' fields).
    """
    obj = object.__new__(cls)
    obj.__dict__.update(values)
    return obj


def complete(obj: object) -> bool:
    """Whether the object has exactly its dataclass's fields set, each a value or (Lazy) a maker of one
    (for the tests of `build`'s callers)."""
    lazy = {name for name, v in vars(type(obj)).items() if isinstance(v, Lazy)}
    given = [k[len("_make_"):] if k.startswith("_make_") and k[len("_make_"):] in lazy else k for k in vars(obj)]
    return len(set(given)) == len(given) and set(given) == {f.name for f in fields(obj)}  # type: ignore[arg-type]
