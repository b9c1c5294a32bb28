"""The direction of calls inside the package: pure cores never reach the I/O edges.

Each rule names a part of the package and the parts it must not import. Imports are read from the
source (absolute and relative alike), so a lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "daemon" / "canaryd"

IO_EDGES = ("canaryd.server", "canaryd.controller", "canaryd.worker", "canaryd.daemon", "canaryd.wiring",
            "canaryd.kube", "canaryd.kube_actuator", "canaryd.leader", "canaryd.watcher", "canaryd.notify",
            "canaryd.sources", "canaryd.routers", "canaryd.commands", "canaryd.cli", "canaryd.actuator")

# part of the package -> what it must never import
RULES: dict[str, tuple[str, ...]] = {
    "canaryd.analysis": ("canaryd.",),  # statistics: numpy, scipy, the stdlib and itself only
    "canaryd.rollout": IO_EDGES + ("canaryd.config",),  # the state machine is pure
    "canaryd.config": IO_EDGES + ("canaryd.metrics", "canaryd.rollout"),
    "canaryd.routers": ("canaryd.controller", "canaryd.worker", "canaryd.daemon", "canaryd.wiring",
                        "canaryd.server", "canaryd.commands", "canaryd.cli", "canaryd.leader", "canaryd.watcher"),
    "canaryd.sources": ("canaryd.controller", "canaryd.worker", "canaryd.daemon", "canaryd.wiring",
                        "canaryd.server", "canaryd.commands", "canaryd.routers", "canaryd.kube"),
    "canaryd.metrics": IO_EDGES,
    "canaryd.alerts": IO_EDGES,
    "canaryd.canary_status": IO_EDGES + ("canaryd.config",),  # a Canary's status and Events, pure
    "canaryd.crd": IO_EDGES,  # the CRD, generated from the config model
}
NEVER = ("canaryd_demo", "tests", "conftest", "pytest")  # the product never imports the demo or test support


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
                found |= {f"{prefix}.{a.name}" for a in node.names} if not node.module else {prefix}
            elif node.module:
                found.add(node.module)
    return found


def _matches(module: str, prefix: str) -> bool:
    return prefix.endswith(".") and module.startswith(prefix) or module == prefix or module.startswith(prefix + ".")


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layering(path: Path) -> None:
    name = _module_name(path)
    imported = _imports(path)
    for part, forbidden in RULES.items():
        if not _matches(name, part):
            continue
        own = [m for m in imported if _matches(m, part)]
        bad = sorted(m for m in set(imported) - set(own) if any(_matches(m, f) for f in forbidden))
        assert not bad, f"{name} ({part}) must not import {bad}"
    bad = sorted(m for m in imported if m.split(".")[0] in NEVER)
    assert not bad, f"{name} imports test or demo code: {bad}"


def test_every_rule_names_a_part_that_exists() -> None:
    names = {_module_name(p) for p in MODULES}
    for part in RULES:
        assert any(_matches(n, part) for n in names), part
