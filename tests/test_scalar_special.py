"""analysis/scalar.py: the judge's scalar special functions give the scipy.special ufuncs' bits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

from canaryd.analysis import scalar

EDGES = [0.0, 1e-300, 1e-12, 0.5, 1.0, 2.0, 1e6, 1e15, math.inf, math.nan, -1.0]
UNIT = [0.0, 1e-300, 1e-9, 0.025, 0.5, 0.975, 1.0 - 1e-12, 1.0, math.nan, -0.1, 1.1]


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.parametrize("name", ["betainc", "betaincinv"])
def test_incomplete_beta(name: str) -> None:
    ours, ufunc = getattr(scalar, name), getattr(special, name)
    rng = np.random.default_rng(7)
    cases = [(a, b, x) for a in EDGES for b in EDGES for x in UNIT]
    cases += [(float(a), float(b), float(x)) for a, b, x in
              zip(rng.uniform(0.01, 5000, 3000), rng.uniform(0.01, 50000, 3000), rng.uniform(0, 1, 3000), strict=True)]
    for a, b, x in cases:
        got = ours(a, b, x)
        assert type(got) is float
        assert _same(got, float(ufunc(a, b, x))), (name, a, b, x)


def test_chi_square_tail() -> None:
    rng = np.random.default_rng(8)
    cases = [(df, x) for df in (0, 1, 2, 39, 1000, math.inf, math.nan) for x in EDGES]
    cases += [(int(df), float(x)) for df, x in zip(rng.integers(1, 60, 2000), rng.uniform(0, 200, 2000), strict=True)]
    for df, x in cases:
        assert _same(scalar.chdtrc(df, x), float(special.chdtrc(df, x))), (df, x)


def test_normal_quantile() -> None:
    for p in [*UNIT, *np.random.default_rng(9).uniform(0, 1, 2000).tolist()]:
        assert _same(scalar.ndtri(p), float(special.ndtri(p))), p
