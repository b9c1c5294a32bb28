"""`canaryd demo`, headless, as a subprocess: both scenarios end as expected, and nothing it started survives.

The full run uses `--fast` (shorter steps; the alert keeps the real timing of rules/), about 90 s.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from canaryd.config import parse_config

# The demo is a project of its own (demo/), installed beside canaryd by `make install`.
pytest.importorskip("canaryd_demo", reason="the demo is not installed: pip install -e ./demo")

from canaryd_demo.report import ScenarioResult, decision_line, summary  # noqa: E402
from canaryd_demo.servers import missing_binaries  # noqa: E402
from canaryd_demo.settings import (  # noqa: E402
    DEFAULT,
    FAST,
    alert_for_seconds,
    daemon_config,
    find_rules,
    worst_case_seconds,
)

ROOT = Path(__file__).resolve().parents[1]
DEMO = [sys.executable, "-m", "canaryd.cli", "demo"]

needs_binaries = pytest.mark.skipif(
    bool(missing_binaries()),
    reason="prometheus / prometheus-alertmanager not installed: sudo apt-get install -y prometheus prometheus-alertmanager",
)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "daemon"), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def _survivors(marker: Path) -> list[str]:
    """Processes whose command line mentions `marker` (the demo's work directory): its Prometheus and
    Alertmanager put their config files there."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(marker) in cmdline and "canaryd.cli" not in cmdline:
            found.append(f"{proc.name}: {cmdline.strip()}")
    return found


def _pids(output: str) -> list[int]:
    return [int(p) for p in re.findall(r"\bpid (\d+)", output)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and ") Z " not in stat.read_text()  # a zombie is gone for our purpose


@needs_binaries
def test_both_scenarios_end_as_expected_and_nothing_survives(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = subprocess.run([*DEMO, "--scenario", "both", "--fast", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=240, env=_env(), cwd=ROOT)
    elapsed = time.monotonic() - started
    out = proc.stdout
    tail = "\n".join(out.splitlines()[-40:]) + "\n--- stderr ---\n" + proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    assert "demo passed: good → promoted, bad → rolled back" in out, tail
    assert re.search(r"good\s+succeeded\s+succeeded\s+auto .* OK", out), tail
    assert re.search(r"bad\s+rolled_back\s+rolled_back\s+(analysis|alert) .* OK", out), tail
    # Live progress: the steps were walked, with numbers and verdicts on each line.
    for weight in ("5 % → 25 %", "25 % → 50 %", "50 % → 100 %"):
        assert weight in out, tail
    assert "PROMOTED" in out and "ROLLBACK" in out, tail
    assert re.search(r"canary [\d.]+ % 5xx, P95 \d+ ms, \d+ req \| stable [\d.]+ % 5xx", out), tail
    # The race was reported: who won and how fast, and what became of the alert (arrived, or why not).
    assert re.search(r"(analysis|alert) won: rolled back [\d.]+ s after the failure began", out), tail
    assert re.search(r"CanaryHighErrorRate (reached canaryd at t0\+[\d.]+ s|did not reach canaryd)", out), tail
    assert "/metrics" in out and "/api/v1/canaries" in out, tail
    # Everything it started is gone.
    pids = _pids(out)
    assert len(pids) >= 2, tail  # Prometheus (one per scenario) and Alertmanager
    assert not [p for p in pids if _alive(p)], tail
    assert _survivors(tmp_path) == []
    assert elapsed < 180, f"the --fast demo took {elapsed:.0f} s"


@needs_binaries
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_everything_it_started(tmp_path: Path, sig: signal.Signals) -> None:
    log = tmp_path / "out.txt"
    with log.open("w") as out:
        proc = subprocess.Popen([*DEMO, "--scenario", "good", "--fast", "--workdir", str(tmp_path / "w")],
                                stdout=out, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while "good  start" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        text = log.read_text()
        assert "good  start" in text, text
        pids = _pids(text)
        assert all(_alive(p) for p in pids) and len(pids) == 2, text
        proc.send_signal(sig)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code == 128 + sig, text
    assert "everything it started is stopped" in text
    assert not [p for p in pids if _alive(p)], text
    assert _survivors(tmp_path) == []


def test_missing_binaries_print_the_install_command(tmp_path: Path) -> None:
    proc = subprocess.run([*DEMO], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env=_env(CANARYD_PROMETHEUS=str(tmp_path / "no-prometheus")))
    assert proc.returncode == 2
    assert "sudo apt-get install -y prometheus prometheus-alertmanager" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_demo_config_is_a_valid_config_and_settings_fit_the_time_budget(tmp_path: Path) -> None:
    for settings in (DEFAULT, FAST):
        cfg = parse_config(daemon_config(settings, port=8080, prometheus_url="http://127.0.0.1:9090",
                                         token_file=tmp_path / "token"), "demo")
        assert cfg.canaries[0].settings.auto_promote
        assert not cfg.kubernetes.enabled
        # Even when a scenario runs into its time limit, the demo ends within 3 minutes.
        assert worst_case_seconds(settings) <= 180, settings
    rules = find_rules()
    assert alert_for_seconds(rules, "CanaryHighErrorRate") is not None


def test_report_lines() -> None:
    entry = {"at": 10.0, "decision": "advance", "trigger": "analysis", "step": 0, "weight": 5,
             "reasons": ["all judged metrics pass"]}
    last = dict(entry, canary_requests=150, stable_requests=2000, metrics=[
        {"name": "error_ratio", "verdict": "pass", "canary": 0.0, "stable": 0.2},
        {"name": "latency_p95", "verdict": "pass", "canary": 80.0, "stable": 90.0},
        {"name": "cpu", "verdict": "skipped"},
    ])
    line = decision_line(entry, last, (5, 25, 50, 100))
    assert "step 1/4   5 % → 25 %" in line
    assert "canary 0.00 % 5xx, P95 80 ms, 150 req | stable 0.20 % 5xx, P95 90 ms, 2000 req" in line
    assert "5xx× ok, p95 ok" in line and "cpu" not in line
    rollback = {"at": 11.0, "decision": "rollback", "trigger": "alert", "step": 1, "weight": 25,
                "reasons": ["alert CanaryHighErrorRate firing"]}
    assert decision_line(rollback, None, (5, 25, 50, 100)).startswith("ROLLBACK  step 2/4  25 % by alert")
    lines = summary([ScenarioResult("good", "succeeded", "succeeded", 40.0, trigger="auto"),
                     ScenarioResult("bad", "rolled_back", "progressing", 60.0, since="the failure", note="why")])
    assert "OK" in lines[1] and "UNEXPECTED" in lines[2] and lines[-1] == "  bad: why"
