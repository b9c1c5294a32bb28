"""`canaryd analyze` and `canaryd validate`: exit codes, output shapes, and clear one-line input errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from canaryd.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

BUCKETS0 = {"0.05": 0, "0.1": 0, "+Inf": 0}


def sample(t, c_req=0, c_err=0, s_req=0, s_err=0, c_buckets=None, s_buckets=None):
    c = {"requests": c_req, "errors": c_err, "latency_buckets": c_buckets or BUCKETS0}
    s = {"requests": s_req, "errors": s_err, "latency_buckets": s_buckets or BUCKETS0}
    return {"t": t, "canary": c, "stable": s}


def write(tmp_path: Path, data, name="in.json") -> str:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(p)


def analyze(*args: str) -> tuple[int, str, str]:
    """The real command in a subprocess: proves exit codes and that no traceback escapes."""
    r = subprocess.run([sys.executable, "-m", "canaryd.cli", "analyze", *args],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    return r.returncode, r.stdout, r.stderr


def test_issue_example_holds_with_exit_3():
    code, out, err = analyze("--input", str(EXAMPLES / "replay-issue.json"))
    assert code == 3, err
    assert out.startswith("decision: HOLD")
    assert "canary has 150 of the 1000 requests needed" in out
    assert "error_ratio" in out and "latency_ratio" in out


def test_json_output_has_the_contract_fields(capsys):
    code = main(["analyze", "--input", str(EXAMPLES / "replay-bad-canary.json"), "--output", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert out["decision"] == "rollback"
    assert out["at"] == 30.0
    assert out["reasons"] and "error_ratio" in out["reasons"][0]
    for m in out["metrics"]:
        assert {"name", "verdict", "p_value", "anytime_p_value", "ratio", "ci", "canary", "stable",
                "reason"} <= m.keys()
    ratio = next(m for m in out["metrics"] if m["name"] == "error_ratio")
    assert ratio["verdict"] == "fail" and ratio["ratio"] > 2 and len(ratio["ci"]) == 2


def test_good_canary_advances_with_exit_0():
    code, out, _ = analyze("-i", str(EXAMPLES / "replay-good-canary.json"))
    assert code == 0
    assert out.startswith("decision: ADVANCE")


def test_stdin_input(tmp_path):
    text = (EXAMPLES / "replay-bad-canary.json").read_text()
    r = subprocess.run([sys.executable, "-m", "canaryd.cli", "analyze", "--input", "-"], input=text,
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 1
    assert "ROLLBACK" in r.stdout


def test_options_change_the_judgement(capsys):
    good = str(EXAMPLES / "replay-good-canary.json")
    # A longer minimum step turns the same data into a hold.
    assert main(["analyze", "-i", good, "--step-duration", "10m"]) == 3
    # More requests than the canary has: hold again.
    assert main(["analyze", "-i", good, "--min-requests", "5000"]) == 3
    # A zero error budget fails the canary on its handful of 5xx.
    assert main(["analyze", "-i", good, "--error-rate", "0", "--alpha", "0.05"]) == 1
    # `off` disables a check: it is listed as skipped.
    assert main(["analyze", "-i", good, "-o", "json", "--error-ratio", "off"]) == 0
    out = capsys.readouterr().out
    last = json.loads(out[out.rindex('{\n  "decision"'):])
    assert next(m for m in last["metrics"] if m["name"] == "error_ratio")["verdict"] == "skipped"


def test_config_settings_are_used(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text((EXAMPLES / "canaryd.yaml").read_text().replace("step_duration: 5m", "step_duration: 10m"))
    good = str(EXAMPLES / "replay-good-canary.json")
    assert main(["analyze", "-i", good, "--config", str(cfg)]) == 3
    assert main(["analyze", "-i", good, "--config", str(cfg), "--canary", "orion/auth-service"]) == 3
    assert main(["analyze", "-i", good, "--config", str(cfg), "--canary", "orion/nope"]) == 2
    assert "no canary 'orion/nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("{not json", "not valid JSON: line 1 column 2"),
        ({"samples": []}, "samples: the list is empty"),
        ({"data": []}, "must be a JSON object with a \"samples\" list"),
        ({"samples": [sample(0, c_req=-5)]}, "samples[0].canary.requests: must be >= 0, got -5"),
        ({"samples": [sample(0, c_req=10), sample(30, c_req=5)]},
         "samples[1].canary.requests: decreased from 10 to 5; counters are cumulative"),
        ({"samples": [sample(0, s_buckets={"0.05": 5, "0.1": 3, "+Inf": 6})]},
         "samples[0].stable.latency_buckets: not cumulative"),
        ({"samples": [sample(0, c_buckets={"0.05": 1, "0.1": 2})]},
         "samples[0].canary.latency_buckets: missing the \"+Inf\" bucket"),
        ({"samples": [sample(0, c_req=5, c_err=9)]}, "samples[0].canary.errors: 9 is more than requests (5)"),
        ({"samples": [sample(0), sample(0)]}, "samples[1].t: 0 is not after the previous sample's 0"),
        ({"samples": [sample(0, c_req="many")]}, "samples[0].canary.requests: must be a number, got \"many\""),
        ({"samples": [{"t": 0, "canary": {"request": 1}}]}, "samples[0].canary.request: unknown field"),
        ({"samples": [sample(0, c_buckets={"0.05": 1, "+Inf": 2}), sample(30, c_buckets={"0.05": 0, "+Inf": 2})]},
         "samples[1].canary.latency_buckets['0.05']: decreased from 1 to 0"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, data, expected):
    code, out, err = analyze("--input", write(tmp_path, data))
    assert code == 2
    assert "Traceback" not in err and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert expected in lines[0]


def test_missing_input_file_and_usage_errors(tmp_path):
    code, _, err = analyze("--input", str(tmp_path / "absent.json"))
    assert code == 2 and "cannot read" in err and "Traceback" not in err
    code, _, err = analyze("--input", str(EXAMPLES / "replay-issue.json"), "--alpha", "2")
    assert code == 2 and "--alpha" in err
    code, _, err = analyze()
    assert code == 2 and "--input" in err
    code, _, err = analyze("--input", str(EXAMPLES / "replay-issue.json"), "--step-duration", "-5m")
    assert code == 2 and "Traceback" not in err


def test_validate_command(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "canaryd.cli", "validate", str(EXAMPLES / "canaryd.yaml")],
                        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert ok.returncode == 0 and "OK" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults:\n  traffic_steps: [5, 50, 25]\n  step_duraton: 5m\n")
    r = subprocess.run([sys.executable, "-m", "canaryd.cli", "validate", str(bad)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "defaults.traffic_steps" in r.stderr
    assert "did you mean 'step_duration'" in r.stderr


def test_help_lists_the_threshold_flags():
    code, out, err = analyze("--help")
    assert code == 0, err
    assert "--error-rate N|off    Canary 5xx rate, % (rollback above; default 5)" in out


def test_a_counter_beyond_float_range_names_its_field(tmp_path, capsys):
    data = {"samples": [sample(0), sample(10)]}
    text = json.dumps(data).replace('"requests": 0', '"requests": 1' + "0" * 400, 1)
    code = main(["analyze", "--input", write(tmp_path, text)])
    err = capsys.readouterr().err
    assert code == 2
    assert "samples[0].canary.requests: must be a finite number" in err
    assert "internal error" not in err and len(err.strip().splitlines()) == 1
