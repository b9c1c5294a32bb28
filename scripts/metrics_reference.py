"""Print the decision metrics as a Markdown table, generated from canaryd's own registry.

Names, types, help texts and label names come from what `canaryd.metrics.Metrics` exports (one canary
with every kind of sample); each closed label set from `canaryd.metrics.label_sets()`, and the judged
metric names from `canaryd.analysis.judge.METRICS`. `python scripts/metrics_reference.py` prints it;
the README holds the same table between `<!-- metrics-reference:start -->` and
`<!-- metrics-reference:end -->`, and a test keeps them equal.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "daemon"))

from prometheus_client import CollectorRegistry  # noqa: E402
from prometheus_client.metrics_core import Metric  # noqa: E402

from canaryd.analysis.judge import METRICS  # noqa: E402
from canaryd.metrics import MetricObservation, Metrics, label_sets  # noqa: E402

# Labels whose values are not a closed set of metrics.py, and where they come from.
OPEN_LABELS = {
    "namespace": None,  # per-canary: said once above the table
    "canary": None,
    "metric": ", ".join(METRICS),
    "alertname": "a name configured in `alerts:`, `other` for every name without a rule, "
                 "`unknown` for a refused request",
    "version": "canaryd's version",
}


def families() -> list[Metric]:
    """Every family canaryd exports, each with samples (so that its labels show)."""
    m = Metrics(CollectorRegistry(), detail="full")  # every per-canary family with samples
    m.set_weight("orion", "auth-service", 5)
    m.set_phase("orion", "auth-service", "progressing")
    m.observe_decision("orion", "auth-service", "hold", [MetricObservation("error_ratio", "pass", 0.5, 1.2)])
    m.alert_received("unknown", "unknown", "unauthorized")
    m.observe_analysis(0.1)
    m.set_leader(True)
    return list(m.registry.collect())


def _labels(family: Metric) -> list[str]:
    names: dict[str, None] = {}
    for sample in family.samples:
        names.update(dict.fromkeys(k for k in sample.labels if k != "le"))
    return list(names)


def rows() -> list[tuple[str, str, str, str]]:
    """(metric with its labels, type, label values, meaning) for every exported metric."""
    closed = label_sets()
    out = []
    for family in families():
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = _labels(family)
        values = []
        for label in labels:
            if label in closed.get(name, {}):
                values.append(f"`{label}`: {', '.join(closed[name][label])}")
            elif OPEN_LABELS[label] is not None:
                values.append(f"`{label}`: {OPEN_LABELS[label]}")
        shown = f"{name}{{{','.join(labels)}}}" if labels else name
        out.append((shown, family.type, "; ".join(values), family.documentation))
    return out


def table() -> str:
    lines = ["| metric | type | label values | meaning |", "| --- | --- | --- | --- |"]
    for metric, kind, values, meaning in rows():
        lines.append(f"| `{metric}` | {kind} | {values.replace('|', chr(92) + '|')} | {meaning} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
