"""What is degraded, and why: one registry that `/readyz`'s detail (`healthy`, `problems`, `?verbose`) reads.

None of it makes the readiness probe fail: a replica whose Prometheus or API server is down must
still take the webhook and the manual rollback (server.py).

Each component (the analysis loop, Prometheus, the leader election, a namespace's watch, a canary's
task) is written by one owner only: the part that knows when it breaks and when it recovers.
"""

from __future__ import annotations


class Health:
    def __init__(self) -> None:
        self._problems: dict[str, str] = {}  # component → why it is not ready

    def set_problem(self, component: str, why: str) -> None:
        self._problems[component] = why

    def clear(self, component: str) -> None:
        self._problems.pop(component, None)

    def problems(self) -> list[str]:
        """"component: why" for every component with a problem, by component."""
        return [f"{k}: {v}" for k, v in sorted(self._problems.items())]

    def components(self) -> dict[str, str]:
        """Component → why it is degraded, for `/readyz?verbose`."""
        return dict(sorted(self._problems.items()))

    def kinds(self) -> dict[str, int]:
        """How many components of each kind (the name's first word: canary, watch, ...) are degraded."""
        counts: dict[str, int] = {}
        for component in self._problems:
            kind = component.split(" ", 1)[0]
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def readiness(self) -> tuple[bool, list[str]]:
        problems = self.problems()
        return not problems, problems
