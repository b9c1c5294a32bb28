"""Size limits that keep every part of the package readable in one sitting.

A module of at most 500 lines; a function of at most 60 lines and cyclomatic complexity 15 (radon's
measure). A function over them is a sign that it does two things: split it rather than raise a limit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from radon.complexity import cc_visit
from radon.visitors import Class

PACKAGE = Path(__file__).resolve().parent.parent / "daemon" / "canaryd"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
MAX_COMPLEXITY = 15

MODULES = sorted(PACKAGE.rglob("*.py"))


def _functions(blocks):
    for b in blocks:
        if isinstance(b, Class):
            yield from _functions(b.methods)
        else:
            yield b
            yield from _functions(getattr(b, "closures", []))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_within_limits(path: Path) -> None:
    text = path.read_text()
    lines = len(text.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name}: {lines} lines (at most {MAX_MODULE_LINES})"
    too_big = [f"{f.fullname}: {f.endline - f.lineno + 1} lines, complexity {f.complexity}"
               for f in _functions(cc_visit(text))
               if f.endline - f.lineno + 1 > MAX_FUNCTION_LINES or f.complexity > MAX_COMPLEXITY]
    assert not too_big, "over the limits: " + "; ".join(too_big)
