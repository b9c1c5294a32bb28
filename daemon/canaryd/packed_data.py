"""Plain data kept compact in memory: marshalled (several times faster than JSON) and compressed with zlib, primed
with the words a rollout's decisions repeat. A daemon keeps, for every canary, its decision history, its last
decision's per-metric results and (dry-run) its route's recent states: kilobytes each as dicts and lists, a
fraction of that packed, decoded only when read."""

from __future__ import annotations

import marshal
import zlib
from typing import Any

__all__ = ["packed", "unpacked"]


def packed(value: Any) -> bytes:
    """Plain data (marshal: dicts, lists, tuples, strings, numbers), serialized and compressed. ValueError
    for anything else (a Mapping of another type inside, say)."""
    packer = zlib.compressobj(1, zlib.DEFLATED, _WINDOW_BITS, zdict=_WORDS)
    return packer.compress(marshal.dumps(value)) + packer.flush()


def unpacked(data: bytes) -> Any:
    unpacker = zlib.decompressobj(_WINDOW_BITS, zdict=_WORDS)
    return marshal.loads(unpacker.decompress(data) + unpacker.flush())


_WINDOW_BITS = 13  # an 8 kB window, enough for a decision's results: set up in ~5 us (the default's 32 kB ~50 us)
# What every decision's per-metric results and reasons repeat (keys, verdicts, the checks' wording): zlib's
# preset dictionary for them, so that each canary's do not spell them out again (~0.3 kB less a decision).
_WORDS = marshal.dumps([{k: None for k in (
    "name", "verdict", "action", "p_value", "anytime_p_value", "adjusted_p_value", "ratio", "ci", "canary",
    "stable", "limit", "unit", "reason", "evidence", "canary_errors", "canary_requests", "stable_errors",
    "stable_requests", "upper_bound_pct", "p0", "dispersion_phi", "dispersion_detected", "lower_pct",
    "upper_pct", "requests", "requests_over_limit", "events", "buckets_too_coarse", "mann_whitney_u",
    "mann_whitney_z", "mann_whitney_effect", "canary_p95_lower_ms", "canary_p95_upper_ms",
    "stable_p95_lower_ms", "stable_p95_upper_ms")}, "inconclusive", "pass", "fail", "warn", "skipped", "rollback",
    "hold", "error_ratio", "latency_ratio", "error_rate", "success_rate", "latency_p95", "latency_p99", "cpu",
    "memory", "error_ratio: canary 5xx ", " % vs stable ", " %, ratio n/a (no 5xx in either arm), 95 % CI ",
    "; neither the ratio's upper bound within 2× nor the rate's upper bound ", " % within stable + 1 pp = ",
    " %; not enough evidence either way yet (anytime p=", ", Holm-adjusted ", "latency_ratio: canary P95 ",
    " ms in (", " ms, ", " ms] vs stable ", " ms], interpolated ratio ", "×; Mann-Whitney A=", "; buckets too coarse: "
    "stable P95 in (", "error_rate: canary 5xx rate ", " % (limit 5 %); within the limit over ", " requests",
    "success_rate: canary success rate ", " % (limit ≥ 95 %); within the limit over ", "latency_p95: canary P95 ",
    " ms vs stable ", " ms (limit 500 ms); within the limit", "latency_p99: canary P99 ", " ms (limit 1000 ms)",
    "cpu: skipped, no data source (no cpu utilisation for the canary)", "memory: skipped, no data source "
    "(no memory utilisation for the canary)", "no data, ", "but not significantly so yet", "significantly above",
    "waiting for the gates", "exceeds the warning limit", "step running ", " of its minimum ", "canary has ",
    " of the ", " requests needed"])
