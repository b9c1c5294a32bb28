"""slot_init (analysis/frozen.py): the anytime tests' states get a faster __init__ that makes the same objects
as the dataclass' own, takes the same arguments, and leaves them frozen."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field

import pytest

from canaryd.analysis.frozen import slot_init


@dataclass(frozen=True, slots=True)
class Plain:
    a: float
    b: tuple[int, ...] = ()
    c: frozenset[str] = field(default_factory=frozenset)
    d: int = 7


@slot_init
@dataclass(frozen=True, slots=True)
class Fast:  # Plain, given slot_init
    a: float
    b: tuple[int, ...] = ()
    c: frozenset[str] = field(default_factory=frozenset)
    d: int = 7


@pytest.mark.parametrize("args, kwargs", [((1.5,), {}), ((1.5, (1, 2)), {"d": 3}),
                                          ((), {"a": 2.0, "c": frozenset({"x"})}), ((0.0, (), frozenset(), 1), {})])
def test_the_same_arguments_make_the_same_object(args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    made, expected = Fast(*args, **kwargs), Plain(*args, **kwargs)
    assert dataclasses.astuple(made) == dataclasses.astuple(expected)
    assert made == Fast(*args, **kwargs) and hash(made) == hash(Fast(*args, **kwargs))
    assert dataclasses.replace(made, d=9).d == 9 and dataclasses.replace(made, d=9).a == made.a
    assert pickle.loads(pickle.dumps(made)) == made
    assert not hasattr(made, "__dict__")


def test_what_the_dataclass_refuses_it_refuses() -> None:
    with pytest.raises(TypeError):
        Fast()  # type: ignore[call-arg] # a is required
    with pytest.raises(TypeError):
        Fast(1.0, e=2)  # type: ignore[call-arg] # no such field
    with pytest.raises(dataclasses.FrozenInstanceError):
        Fast(1.0).a = 2.0  # type: ignore[misc]


def test_each_object_gets_its_own_default_from_a_factory() -> None:
    @slot_init
    @dataclass(frozen=True, slots=True)
    class Holder:
        items: list[int] = field(default_factory=list)

    one, two = Holder(), Holder()
    assert one.items == [] and one.items is not two.items


def test_it_is_only_for_the_classes_it_can_make_alike() -> None:
    @dataclass(frozen=True)
    class WithDict:
        a: int

    @dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True, kw_only=True)
    class KeywordOnly:
        a: int

    for cls in (WithDict, Checked, KeywordOnly):
        with pytest.raises(TypeError):
            slot_init(cls)
