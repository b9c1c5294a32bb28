"""Exit codes and small helpers shared by the sub-commands."""

from __future__ import annotations

import sys

from ..analysis.verdicts import Decision
from ..config import ConfigError

EXIT_ADVANCE = 0
EXIT_ROLLBACK = 1
EXIT_USAGE = 2
EXIT_HOLD = 3

DECISION_EXIT = {Decision.ADVANCE: EXIT_ADVANCE, Decision.ROLLBACK: EXIT_ROLLBACK, Decision.HOLD: EXIT_HOLD}


def config_problems(e: ConfigError) -> int:
    """A config that does not load: every problem on its own line (file, key path, what is allowed), exit 2."""
    for problem in e.problems:
        print(problem, file=sys.stderr)
    return EXIT_USAGE


def fail(command: str, message: str) -> int:
    """A usage, config or input error: one line on stderr, exit 2."""
    print(f"canaryd {command}: {message}", file=sys.stderr)
    return EXIT_USAGE
