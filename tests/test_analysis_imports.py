"""analysis/ is pure statistics: every module in it imports only numpy, scipy, the stdlib and itself."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ANALYSIS = Path(__file__).resolve().parent.parent / "daemon" / "canaryd" / "analysis"
ALLOWED = {"numpy", "scipy", "__future__"} | set(sys.stdlib_module_names)


@pytest.mark.parametrize("module", sorted(ANALYSIS.glob("*.py")), ids=lambda p: p.name)
def test_analysis_module_imports_only_numpy_scipy_stdlib(module: Path) -> None:
    roots = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])  # relative imports (level > 0) stay inside analysis/
    assert roots <= ALLOWED, f"{module.name} imports {sorted(roots - ALLOWED)}"
