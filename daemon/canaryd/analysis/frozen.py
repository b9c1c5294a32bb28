"""Frozen dataclasses made on the judge's hot path without their generated __init__ (build), or with a
faster one (slot_init).

A frozen dataclass's __init__ sets each field through object.__setattr__: for the dozen-field records the
judge returns every tick (eight metric results and the judgement), that costs more than the statistics.
`build` makes the same object from every field's value; the class stays frozen for its readers. Not for
the state kept per canary: an object built so carries a dict of its own. The anytime tests' states, made
every tick and kept per canary, are frozen slots dataclasses (no dict at all) given a faster __init__ by
`slot_init`: the same arguments and the same object, each slot set through its own descriptor rather than
through object.__setattr__ (which looks the field up on the class each time).

A field declared `Lazy` may be given to `build` as a maker instead (`_make_<name>=maker`): the text of a
verdict that nobody reads is not formatted. Its first read calls the maker and keeps the value; to every
reader (getattr, dataclasses' eq, repr, replace, asdict, copy and pickle) it is the field's value.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
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
    (for the tests of `build`'s and `slot_init`'s callers)."""
    if not hasattr(obj, "__dict__"):  # a slots class (slot_init): every field's slot set
        return all(hasattr(obj, f.name) for f in fields(obj))  # type: ignore[arg-type]
    lazy = {name for name, v in vars(type(obj)).items() if isinstance(v, Lazy)}
    given = [k[len("_make_"):] if k.startswith("_make_") and k[len("_make_"):] in lazy else k for k in vars(obj)]
    return len(set(given)) == len(given) and set(given) == {f.name for f in fields(obj)}  # type: ignore[arg-type]


def slot_init(cls: type[T]) -> type[T]:
    """Gives the frozen slots dataclass `cls` an __init__ that sets each slot through its descriptor.

    The generated __init__ of a frozen dataclass sets each field through object.__setattr__, which looks the
    field up on the class every time: for the anytime tests' states, made every tick, that was ~3 µs a tick.
    This one takes the same arguments (defaults and default factories included) and makes the same object.
    """
    if "__slots__" not in cls.__dict__ or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: slot_init is for slots dataclasses without __post_init__")
    params, body = [], []
    scope: dict[str, Any] = {"_MISSING": MISSING}
    for f in fields(cls):  # type: ignore[arg-type]
        if not f.init or f.kw_only:
            raise TypeError(f"{cls.__name__}.{f.name}: slot_init needs every field in __init__, positional too")
        scope[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        if f.default is not MISSING:
            scope[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        elif f.default_factory is not MISSING:
            scope[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_MISSING")
            body.append(f" if {f.name} is _MISSING: {f.name} = _factory_{f.name}()")
        else:
            params.append(f.name)
        body.append(f" _set_{f.name}(self, {f.name})")
    exec(f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body), scope)  # as dataclasses makes its own __init__
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[misc]
    return cls
