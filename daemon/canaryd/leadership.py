"""Whether this replica leads: a toggle that the leader election alone flips, and others read.

Without leader election the daemon always leads. Listeners (the is-leader gauge) hear each change.
"""

from __future__ import annotations

from collections.abc import Callable


class Leadership:
    def __init__(self, leading: bool = True) -> None:
        self._leading = leading
        self._listeners: list[Callable[[bool], None]] = []

    @property
    def is_leader(self) -> bool:
        return self._leading

    def set(self, leading: bool) -> None:
        changed = leading != self._leading
        self._leading = leading
        if changed:
            for listener in self._listeners:
                listener(leading)

    def subscribe(self, listener: Callable[[bool], None]) -> None:
        """Call `listener` with the current value now, and with each new one."""
        self._listeners.append(listener)
        listener(self._leading)
