"""The text of GET /metrics: prometheus_client's encoders, and a faster one for the per-canary families.

`RowFamily` holds a per-canary family as rows of label values (metrics.py builds them at scrape time);
its `text` writes the Prometheus text format 0.0.4 straight from the rows, a few times faster than
through the library's Sample tuples, in pieces so that metrics.Metrics.render can pause between them.
`render` drops the `*_created` samples prometheus_client adds to counters and histograms (see
metrics.py for why).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

__all__ = ["ROWS_PER_STEP", "Families", "RowFamily", "render", "without_created"]

ROWS_PER_STEP = 128  # rows of text per piece (~0.3 ms)


class RowFamily(Metric):
    """A per-canary family as rows of label values. The text format is written straight from the
    rows (`text`), a few times faster than through prometheus_client's Sample tuples; `samples`
    builds those only for whoever asks (OpenMetrics, `get_sample_value`)."""

    def __init__(self, name: str, documentation: str, typ: str, labels: tuple[str, ...]) -> None:
        super().__init__(name, documentation, typ)
        self.labels = labels
        self.rows: list[tuple[tuple[str, ...], float, float | None]] = []  # label values, value, created

    def add(self, values: tuple[str, ...], value: float, created: float | None = None) -> None:
        self.rows.append((values, value, created))

    @property  # type: ignore[override]
    def samples(self) -> list[Sample]:
        name = self.name + ("_total" if self.type == "counter" else "")
        out = []
        for values, value, created in self.rows:
            labels = dict(zip(self.labels, values, strict=True))
            out.append(Sample(name, labels, value))
            if created is not None:
                out.append(Sample(self.name + "_created", labels, created))
        return out

    @samples.setter
    def samples(self, _: object) -> None:  # Metric.__init__ sets an empty list; the rows are the samples
        pass

    def text(self, header: bool = True) -> Iterator[bytes]:
        """This family in the text format 0.0.4, as prometheus_client's generate_latest writes it
        (labels sorted by name, no `_created` samples), in pieces of ROWS_PER_STEP rows. `header`: with
        its HELP and TYPE lines (not for the rest of a family written in parts)."""
        name = self.name + ("_total" if self.type == "counter" else "")
        order = sorted(range(len(self.labels)), key=self.labels.__getitem__)
        escaped: dict[str, str] = {}  # the same namespaces, names and label values recur on every row
        doc = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        if header:
            yield f"# HELP {name} {doc}\n# TYPE {name} {self.type}\n".encode()
        lines: list[str] = []
        for values, value, _ in self.rows:
            parts = []
            for i in order:
                v = values[i]
                e = escaped.get(v)
                if e is None:
                    e = escaped[v] = v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')
                parts.append(f'{self.labels[i]}="{e}"')
            lines.append(f"{name}{{{','.join(parts)}}} {floatToGoString(value)}\n")
            if len(lines) == ROWS_PER_STEP:
                yield "".join(lines).encode()
                lines.clear()
        yield "".join(lines).encode()


_CREATED_TYPES = frozenset({"counter", "histogram", "summary", "gaugehistogram"})


class Families:
    """A collector over families already collected (what generate_latest takes)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def without_created(family: Metric) -> Metric:
    if family.type not in _CREATED_TYPES or isinstance(family, RowFamily):
        return family
    created = family.name + "_created"
    copy = Metric(family.name, family.documentation, family.type, family.unit)
    copy.samples = [s for s in family.samples if s.name != created]
    return copy


def render(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """Body and Content-Type for GET /metrics; `accept` (the request's Accept header) may ask for
    OpenMetrics. Default: Prometheus text format 0.0.4, whose per-canary families are written by
    `RowFamily.text`, in one go (metrics.Metrics.render is the stepped one for the daemon). Thread-safe."""
    encoder, content_type = choose_encoder(accept or "")
    families = [without_created(f) for f in registry.collect()]
    if content_type.startswith("application/openmetrics-text"):
        # Rare (Prometheus asks for the text format by default): every family through the library.
        rest = [f if not isinstance(f, RowFamily) else _plain(f) for f in families]
        return encoder(Families(rest)), content_type  # type: ignore[arg-type]
    fast = [f for f in families if isinstance(f, RowFamily)]
    rest = [f for f in families if not isinstance(f, RowFamily)]
    pieces = [encoder(Families(rest))]  # type: ignore[arg-type]
    for family in fast:
        pieces += family.text()
    return b"".join(pieces), content_type


def _plain(family: RowFamily) -> Metric:
    """The family as a library Metric without `_created` samples."""
    copy = Metric(family.name, family.documentation, family.type, family.unit)
    copy.samples = [s for s in family.samples if not s.name.endswith("_created")]
    return copy
