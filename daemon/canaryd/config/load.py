"""Loading: YAML (duplicate keys refused) → validated sections → the typed, frozen Config."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .checks import _merge, _valid, check_all
from .kinds import _Ctx, _show, one_line
from .model import AlertRule, AnalysisSettings, CanaryConfig, Config, extend_alerts
from .schema import _TOP, VERSION, construct, share


class ConfigError(Exception):
    """The configuration is invalid. `problems` lists every problem found, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = [one_line(p) for p in problems]  # a value or key quoted in one cannot break it
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


def _build(raw: Mapping[str, Any], ctx: _Ctx) -> Config | None:
    check_all(ctx, raw)
    if ctx.problems or not _valid(raw):
        return None
    defaults = raw["defaults"]
    shared: dict[object, object] = {}  # the canaries' equal sections, built once (schema.share)
    canaries = tuple(construct(CanaryConfig, c, shared,
                               settings=share(shared, construct(AnalysisSettings, _merge(defaults, c), shared)))
                     for c in raw["canaries"])
    alerts = extend_alerts(tuple(construct(AlertRule, a) for a in raw["alerts"]))
    return construct(Config, raw, canaries=canaries, alerts=alerts, source=ctx.source)


def parse_config(data: object, source: str = "<config>") -> Config:
    """Validate already-parsed YAML/JSON data. Raises ConfigError listing every problem."""
    ctx = _Ctx(source)
    if data is None:  # an empty file: every default, no canaries
        data = {}
    if not isinstance(data, Mapping):
        ctx.add("", f"must be a mapping with the sections {', '.join(_TOP.keys())}, got {_show(data)}")
        raise ConfigError(ctx.problems)
    if "version" in data:  # the README's `version: 1` heading a file: checked, then set aside
        VERSION.parse(data["version"], ctx, "version")
        data = {k: v for k, v in data.items() if k != "version"}
    config = _build(_TOP.parse(data, ctx, ""), ctx)
    if ctx.problems or config is None:
        raise ConfigError(ctx.problems or [f"{source}: (top level): invalid configuration"])
    return config


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which plain YAML loading silently resolves to the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _value in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {key_node.value!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(source: str, error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        context = f" ({error.context})" if error.context else ""
        return f"{source}: {where}: invalid YAML: {error.problem}{context}; fix the syntax at that line"
    if isinstance(error, yaml.reader.ReaderError):  # its str() is two lines
        char = chr(error.character) if isinstance(error.character, int) else error.character
        return (f"{source}: character {error.position + 1}: invalid YAML: unacceptable character "
                f"{char!r}; remove it or write it as an escape in a double-quoted string")
    return f"{source}: (top level): invalid YAML: {' '.join(str(error).split())}"


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file. Raises ConfigError (unreadable file, bad YAML, bad values)."""
    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError([f"{source}: (file): cannot read: {e.strerror or e}; give a readable YAML file"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([f"{source}: (file): not UTF-8 text at byte {e.start}; save the file as UTF-8"]) from None
    try:
        data = _read_yaml(text, source)
        return parse_config(data, source)
    except RecursionError:
        raise ConfigError([f"{source}: (file): nested too deeply to read; a canaryd config is at most a few "
                           "levels deep (see examples/canaryd.yaml)"]) from None


def _read_yaml(text: str, source: str) -> object:
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as e:
        raise ConfigError([_yaml_problem(source, e)]) from None
    except ValueError as e:  # an integer of more digits than python converts (int_max_str_digits)
        raise ConfigError([f"{source}: (file): cannot read a value: {e}; write a number of a sensible size"]) from None
    if data is None:
        # An empty file is a mistake (a wrong path, an empty ConfigMap key), not a request for defaults.
        raise ConfigError([f"{source}: (file): the file is empty; a config is a mapping of sections such as "
                           "canaries:, or {} for every default (see examples/canaryd.yaml)"])
    return data
