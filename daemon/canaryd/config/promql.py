"""PromQL syntax of every query as the daemon renders it, checked with promql-parser (Prometheus'
grammar): a query that Prometheus would refuse is a config problem with its key path, not a metric
silently skipped at run time. Used by `canaryd validate`; loading does not need it."""

from __future__ import annotations

from dataclasses import fields

import promql_parser

from .model import CanaryConfig, Config, Queries
from .queries import _Template, render_query

_SAMPLE_WINDOW = "1m"  # any valid range: the daemon fills in its own


def _syntax_error(expr: str) -> str | None:
    try:
        promql_parser.parse(expr)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - the parser is Rust: a panic arrives as a BaseException
        return str(e).strip() or type(e).__name__
    return None


def _rendered(template: str, counter: bool, c: CanaryConfig, arm: str) -> str:
    a = getattr(c, arm)
    expr = render_query(template, selector=a.selector, namespace=c.namespace, deployment=a.deployment,
                        window=_SAMPLE_WINDOW)
    # A counter's template is a selector the daemon wraps; check it in its place.
    return f"increase({expr}[{_SAMPLE_WINDOW}])" if counter else expr


def promql_problems(config: Config) -> list[str]:
    """One line per query that does not parse, for either arm: '<file>: <key path>: ...'."""
    problems = []
    for i, c in enumerate(config.canaries):
        for f in fields(Queries):
            kind, template = f.metadata.get("kind"), getattr(c.queries, f.name)
            if not isinstance(kind, _Template) or not isinstance(template, str):
                continue
            for arm in ("stable", "canary"):
                expr = _rendered(template, kind.counter, c, arm)
                error = _syntax_error(expr)
                if error is not None:
                    problems.append(f"{config.source}: canaries[{i}].queries.{f.name}: is not valid PromQL "
                                    f"({error}), rendered for the {arm} arm as {expr}; fix the template")
                    break  # the same mistake for the other arm is the same problem
    return problems
