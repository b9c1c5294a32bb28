"""Property tests of the config loader (load_config, parse_config) and of `canaryd validate FILE`.

Whatever the file or the data holds: a Config, or a ConfigError whose every problem is one line
``<file>: <key path>: <what>`` naming the place; never another exception. `canaryd validate` exits 0
or 2 with those lines, never "internal error" nor a traceback.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canaryd.config import Config, ConfigError, json_schema, load_config, parse_config

EXAMPLES = int(os.environ.get("CANARYD_FUZZ_EXAMPLES", "2000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # a large document takes longer on a loaded machine; the whole run is bounded below
    database=None,  # no .hypothesis/ directory in the tree; a failure prints its reproduction blob
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# `canaryd validate` starts a python each time: a smaller sample.
CLI = settings(FUZZ, max_examples=max(1, EXAMPLES // 160))

BASE: dict[str, Any] = yaml.safe_load((Path(__file__).parents[1] / "examples" / "canaryd.yaml").read_text())


def _keys(schema: Mapping[str, Any]) -> Iterator[str]:
    for key, sub in schema.get("properties", {}).items():
        yield key
        yield from _keys(sub)
    for sub in (schema.get("items"), schema.get("additionalProperties")):
        if isinstance(sub, Mapping):
            yield from _keys(sub)


REAL_KEYS = sorted(set(_keys(json_schema())))
ODD_TEXT = st.text(st.one_of(st.characters(), st.sampled_from(["\ud800", "\udfff", "\n", "\r", "\u2028", "\x85",
                                                                 "\x00", ":", " ", "#", "{", "[", "'", '"', "."])),
                   max_size=12)


@st.composite
def near_keys(draw: st.DrawFn) -> str:
    """A real key, or one a typo away from it (case, a letter dropped or doubled, a suffix)."""
    key = draw(st.sampled_from(REAL_KEYS))
    how = draw(st.integers(0, 5))
    if how == 1:
        return key.upper()
    if how == 2 and len(key) > 1:
        i = draw(st.integers(0, len(key) - 1))
        return key[:i] + key[i + 1:]
    if how == 3:
        i = draw(st.integers(0, len(key)))
        return key[:i] + draw(ODD_TEXT) + key[i:]
    if how == 4:
        return key.replace("_", draw(st.sampled_from(["-", "", " ", "."])))
    return key


DURATIONS = st.sampled_from(["30s", "5m", "1h30m", "500ms", "1d", "0s", "-5s", "5", "1e9h", "99999999999d", "1m1m",
                             "5 m", "1.5m", "inf", "nan", "5M", "", "s", "1h 30m", "10**400", "0x10s", "٣s"])
NUMBERS = st.one_of(st.integers(), st.floats(), st.sampled_from([10**400, -(10**400), 2**63, 1e308, -0.0, 5e-324]))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, ODD_TEXT, DURATIONS,
                    st.sampled_from(["istio", "linkerd", "gateway-api", "rollback", "hold", "ignore", "pause",
                                     'job="x"', "http://127.0.0.1:9090", "127.0.0.1:8080", "orion", "/tmp/x"]))
# What a YAML file can hold beyond JSON (SafeLoader: timestamps, binary, sets) and python callers pass.
PY_SCALARS = st.one_of(SCALARS, st.dates(), st.datetimes(), st.binary(max_size=8),
                       st.just(datetime.time(1, 2)), st.sampled_from([(), (1, 2), frozenset({1})]))
KEYS = st.one_of(near_keys(), near_keys(), ODD_TEXT, st.integers(), st.none(), st.booleans(), st.floats())


def values(scalars: st.SearchStrategy[Any], keys: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                        max_leaves=12)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


VALUES = values(SCALARS, KEYS)
PY_VALUES = values(PY_SCALARS, KEYS)


@st.composite
def mutated(draw: st.DrawFn, anything: st.SearchStrategy[Any] = VALUES) -> Any:
    """The example config with one to three places changed: a value replaced, a key dropped or added."""
    doc = json.loads(json.dumps(BASE))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(doc))))
        if not path:
            continue
        *up, last = path
        parent = doc
        for step in up:
            parent = parent[step]
        how = draw(st.integers(0, 3))
        if how == 0:
            del parent[last]
        elif how == 1 and isinstance(parent, dict):
            parent[draw(KEYS)] = draw(anything)
        else:
            parent[last] = draw(anything)
    return doc


def deep(depth: int, kind: str) -> Any:
    doc: Any = 1
    for _ in range(depth):
        doc = [doc] if kind == "list" else {"defaults": doc}
    return doc


DOCS = st.one_of(mutated(), mutated(), mutated(PY_VALUES), PY_VALUES)
DEEP = st.builds(deep, st.integers(1, 5000), st.sampled_from(["list", "dict"]))
DATA = st.integers(0, 19).flatmap(lambda n: DEEP if n == 0 else DOCS)

SNIPPETS = ["a: &a [*a]\n", "defaults: &d {interval: 30s}\ncanaries: [{<<: *d, name: x}]\n", "!!python/object:os.system x",
            "server: !!binary aGVsbG8=\n", "defaults: !!set {a, b}\n", "prometheus: {timeout: 2020-01-01}\n",
            "server: !custom 1\n", "defaults:\n  interval: 30s\n  interval: 1m\n", "\ufeffserver: {}\n", "---\n---\n",
            "- " * 3000, "a: " + "9" * 5000, "defaults: {alpha: " + "9" * 400 + "}", "%YAML 9.9\n---\n{}", "canaries: [" + "{name: a}," * 50 + "]"]


def _dump(doc: Any, unicode: bool) -> str:
    try:
        return yaml.safe_dump(doc, allow_unicode=unicode)
    except (yaml.YAMLError, RecursionError, ValueError):
        return json.dumps(doc, default=str)  # JSON is YAML; lone surrogates as \uXXXX escapes


@st.composite
def files(draw: st.DrawFn) -> bytes:
    # Deep nesting is slow to refuse (the parser recurses until python stops it): one file in forty.
    kind = draw(st.sampled_from(["yaml"] * 22 + ["edit"] * 8 + ["snippet"] * 4 + ["bytes"] * 5 + ["deep"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "snippet":
        return draw(st.sampled_from(SNIPPETS)).encode()
    if kind == "deep":  # written directly: no dumper nests this deep
        n = draw(st.integers(1, 1500))  # PyYAML's scanner takes quadratic time in flow nesting
        return (draw(st.sampled_from(["[", "{a: ", "- "])) * n + "1").encode()
    text = _dump(draw(DOCS), draw(st.booleans()))
    if kind == "edit":  # a line doubled (a duplicate key), cut short, or a stray character
        lines = text.splitlines(keepends=True) or [""]
        i = draw(st.integers(0, len(lines) - 1))
        how = draw(st.integers(0, 2))
        if how == 0:
            lines.insert(i, lines[i])
        elif how == 1:
            lines = lines[:i]
        else:
            lines[i] = draw(ODD_TEXT) + lines[i]
        text = "".join(lines)
    raw = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0 and raw:  # a byte that is not UTF-8
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + b"\xff" + raw[i + 1:]
    return raw


def check_problems(source: str, error: ConfigError) -> None:
    assert error.problems, "a ConfigError without problems"
    for problem in error.problems:
        assert len(problem.splitlines()) == 1 and "\n" not in problem and "\r" not in problem, problem
        assert problem.startswith(f"{source}: "), problem
        place, sep, what = problem[len(source) + 2:].partition(": ")
        assert sep and place.strip() and what.strip(), problem


def _load(path: Path, seen: dict[str, int]) -> None:
    try:
        config = load_config(path)
    except ConfigError as e:
        check_problems(str(path), e)
        seen["error"] = seen.get("error", 0) + 1
    else:
        assert isinstance(config, Config)
        seen["ok"] = seen.get("ok", 0) + 1


def _parse(data: Any, seen: dict[str, int]) -> None:
    try:
        config = parse_config(data, "fuzz.yaml")
    except ConfigError as e:
        check_problems("fuzz.yaml", e)
        seen["error"] = seen.get("error", 0) + 1
    else:
        assert isinstance(config, Config)
        seen["ok"] = seen.get("ok", 0) + 1


def test_any_file_or_data_loads_or_names_its_problems(tmp_path: Path) -> None:
    """Files through load_config (YAML, bytes), data through parse_config (what YAML cannot write)."""
    path = tmp_path / "canaryd.yaml"
    seen: dict[str, int] = {}
    started = time.monotonic()

    @FUZZ
    @given(example=st.tuples(st.just("file"), files()) | st.tuples(st.just("data"), DATA))
    def one(example: tuple[str, Any]) -> None:
        kind, content = example
        if kind == "file":
            path.write_bytes(content)
            _load(path, seen)
        else:
            _parse(content, seen)

    one()
    print(f"config files and data: {seen} in {time.monotonic() - started:.1f}s")
    assert sum(seen.values()) >= FUZZ.max_examples, seen
    assert seen.get("error") and seen.get("ok"), seen


@pytest.mark.parametrize("snippet", [*SNIPPETS, "{" * 3000, "[" * 3000])
def test_yaml_oddities(tmp_path: Path, snippet: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(snippet)
    _load(path, {})


def test_validate_command_exits_0_or_2_with_one_line_per_problem(tmp_path: Path) -> None:
    path = tmp_path / "canaryd.yaml"
    seen: dict[int, int] = {}

    @CLI
    @given(content=files())
    def one(content: bytes) -> None:
        path.write_bytes(content)
        proc = subprocess.run([sys.executable, "-m", "canaryd.cli", "validate", str(path)], capture_output=True,
                              timeout=60, check=False)
        out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        seen[proc.returncode] = seen.get(proc.returncode, 0) + 1
        assert proc.returncode in (0, 2), (proc.returncode, err)
        assert "internal error" not in err and "Traceback" not in err, err
        if proc.returncode == 0:
            assert out.startswith(f"{path}: OK") and err == "", (out, err)
        else:
            assert out == "" and err, (out, err)
            for line in err.splitlines():
                assert line.startswith(f"{path}: ") and ": " in line[len(str(path)) + 2:], line

    one()
    print(f"validate exit codes: {seen}")
    assert seen.get(2), seen


@pytest.mark.parametrize(("data", "place"), [
    ({"defaults": {"alpha": 10**400}}, "defaults.alpha"),
    ({"defaults": {"interval": 10**400}}, "defaults.interval"),
    ({"defaults": {"interval": 1e308}}, "defaults.interval"),  # format_duration overflowed
    ({"defaults": {"step_duration": "99999999999d"}}, "defaults.step_duration"),
    ({"server": {"a\nb": 1}}, 'server["a\\nb"]'),
    ({"server": {"a.b\u2028": 1}}, 'server["a.b\\u2028"]'),
    ({"defaults": {"thresholds": 5}, "canaries": [{**BASE["canaries"][0], "thresholds": {"cpu": 50}}]},
     "defaults.thresholds"),
])
def test_what_fuzzing_found_is_one_problem_naming_its_place(data: dict[str, Any], place: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(data, "f.yaml")
    check_problems("f.yaml", e.value)
    assert any(p.startswith(f"f.yaml: {place}: ") for p in e.value.problems), e.value.problems


def test_a_character_yaml_refuses_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"a: b\x1d\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.problems == [f"{path}: character 5: invalid YAML: unacceptable character '\\x1d'; remove it or "
                                "write it as an escape in a double-quoted string"]
