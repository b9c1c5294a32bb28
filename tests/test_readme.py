"""The README's generated parts stay in step with the code they describe."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_reference_is_generated_from_the_schema():
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- config-reference:start -->\n(.*)\n<!-- config-reference:end -->", readme, re.S)
    assert m, "the README lost its config-reference markers"
    table = _load("config_reference", ROOT / "scripts" / "config_reference.py").table()
    assert m.group(1) == table, "README config reference drifted: run python scripts/config_reference.py"


def test_metrics_table_is_generated_from_the_metrics():
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- metrics-reference:start -->\n(.*)\n<!-- metrics-reference:end -->", readme, re.S)
    assert m, "the README lost its metrics-reference markers"
    table = _load("metrics_reference", ROOT / "scripts" / "metrics_reference.py").table()
    assert m.group(1) == table, "README metrics table drifted: run python scripts/metrics_reference.py"


def test_every_closed_label_set_belongs_to_an_exported_label():
    """label_sets() names real metrics and labels, so the generated table cannot list a set nobody uses."""
    from canaryd.metrics import label_sets

    reference = _load("metrics_reference", ROOT / "scripts" / "metrics_reference.py")
    exported = {f.name + ("_total" if f.type == "counter" else ""): set(reference._labels(f))
                for f in reference.families()}
    for metric, sets in label_sets().items():
        assert metric in exported, metric
        assert set(sets) <= exported[metric], (metric, set(sets))
        for label in exported[metric] - set(sets):
            assert label in reference.OPEN_LABELS, (metric, label)


def test_every_alert_has_its_runbook_section():
    readme = (ROOT / "README.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", readme, re.M)}
    alerts = set()
    for f in (ROOT / "rules").glob("*.yml"):
        alerts |= set(re.findall(r"- alert: (\w+)", f.read_text()))
    assert alerts
    for alert in alerts:
        assert f"runbook-{alert.lower()}" in anchors, f"no README section 'Runbook: {alert}'"


def test_readme_names_the_test_command():
    assert "make test" in (ROOT / "README.md").read_text()


def test_readme_links_the_contracts():
    assert "(docs/contracts.md)" in (ROOT / "README.md").read_text()
    assert (ROOT / "docs" / "contracts.md").is_file()
