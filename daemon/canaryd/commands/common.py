"""Exit codes and small helpers shared by the sub-commands."""

from __future__ import annotations

import sys

from ..analysis.verdicts import Decision

EXIT_ADVANCE = 0
EXIT_ROLLBACK = 1
EXIT_USAGE = 2
EXIT_HOLD = 3

DECISION_EXIT = {Decision.ADVANCE: EXIT_ADVANCE, Decision.ROLLBACK: EXIT_ROLLBACK, Decision.HOLD: EXIT_HOLD}


def fail(command: str, message: str) -> int:
    """A usage, config or input error: one line on stderr, exit 2."""
    print(f"canaryd {command}: {message}", file=sys.stderr)
    return EXIT_USAGE
