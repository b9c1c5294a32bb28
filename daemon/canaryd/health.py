"""Who is not ready, and why: one registry that `/readyz` reads.

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

    def readiness(self) -> tuple[bool, list[str]]:
        problems = self.problems()
        return not problems, problems
