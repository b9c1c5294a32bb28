"""Sub-commands. Each module exposes `register(subparsers)` and sets `handler` on its parser.

Commands that other distributions provide (`canaryd demo`) are found through entry points: see plugins.py.
"""

from __future__ import annotations

from types import ModuleType

from . import analyze, deploy, monitor, operate, run, schema, validate

COMMANDS: tuple[ModuleType, ...] = (run, analyze, deploy, monitor, operate, validate, schema)
