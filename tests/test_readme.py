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
