"""Structured logs: JSON lines by default, plain text for people (`--log-format text`)."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from aiohttp.http_exceptions import HttpProcessingError

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _encodable(text: str) -> str:
    # A lone surrogate from a request (a header, a path) cannot be written to a UTF-8 stream: the
    # handler would print its own "--- Logging error ---" traceback and drop the line.
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encodable(json.dumps(entry, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        fields = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        line = f"{ts} {record.levelname:<7} {record.getMessage()}" + (f"  {fields}" if fields else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return _encodable(line)


class BadRequestFilter(logging.Filter):
    """aiohttp logs every request it cannot parse (bad request line, header too long, ...) at ERROR
    with a traceback of its own parser. That is the client's fault: keep one WARNING line naming it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and record.levelno > logging.WARNING:
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            # The first line only: the next ones echo the raw request line or header, which may hold a token.
            problem = next((line.strip() for line in str(exc.message).splitlines() if line.strip()), "")[:200]
            record.msg, record.args = "bad HTTP request from %s: %s %s", (remote, exc.code, problem)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
            return logging.getLogger(record.name).isEnabledFor(logging.WARNING)
        return True


class DecisionLog:
    """One canary's decisions: at INFO when a decision says something new (another decision, phase or
    step than the last one logged, or `repeat_every` seconds later), a repeated hold at DEBUG. 10,000
    canaries holding would otherwise write 10,000 lines an interval (~30 µs each on the event loop)."""

    def __init__(self, logger: logging.Logger, canary: str, repeat_every: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.canary = canary
        self.repeat_every = repeat_every
        self.clock = clock
        self._last: tuple[str, str, int] | None = None
        self._last_at = -math.inf

    def log(self, decision: str, phase: str, weight: int, step: int, reasons: Sequence[str]) -> None:
        now = self.clock()
        repeat = self._last == (decision, phase, step) and now - self._last_at < self.repeat_every
        level = logging.DEBUG if repeat else logging.INFO
        if not repeat:
            self._last, self._last_at = (decision, phase, step), now
        if self.logger.isEnabledFor(level):
            self.logger.log(level, "decision", extra={"canary": self.canary, "decision": decision, "phase": phase,
                                                      "weight": weight, "step": step, "reasons": list(reasons)})


def setup_logging(fmt: str = "json", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log is off; its internal warnings stay.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    quiet_bad_requests()


def quiet_bad_requests() -> BadRequestFilter:
    """Install `BadRequestFilter` on aiohttp's server logger (once); returns the installed filter."""
    server = logging.getLogger("aiohttp.server")
    for f in server.filters:
        if isinstance(f, BadRequestFilter):
            return f
    f = BadRequestFilter()
    server.addFilter(f)
    return f
