"""Sub-commands. Each module exposes `register(subparsers)` and sets `handler` on its parser."""

from __future__ import annotations

from types import ModuleType

from . import analyze, demo, deploy, monitor, operate, run, validate

COMMANDS: tuple[ModuleType, ...] = (run, analyze, deploy, monitor, operate, validate, demo)
