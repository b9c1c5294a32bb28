"""logs.py: one line per record, even for a request aiohttp cannot parse or text that is not UTF-8."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from aiohttp.http_exceptions import BadHttpMessage

from canaryd.logs import JsonFormatter, TextFormatter, quiet_bad_requests


@pytest.fixture
def aiohttp_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("aiohttp.server")
    quiet = quiet_bad_requests()
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.removeFilter(quiet)


def test_a_malformed_request_is_one_warning_line_without_a_traceback(aiohttp_log: io.StringIO) -> None:
    try:
        raise BadHttpMessage("Invalid header value char:\n\n  b'Authorization: \\x01'\n   ^")
    except BadHttpMessage as e:
        # what aiohttp's RequestHandler.handle_error does
        logging.getLogger("aiohttp.server").exception("Error handling request from %s", "10.0.0.7", exc_info=e)
    (line,) = aiohttp_log.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "warning" and "exception" not in entry
    assert entry["msg"] == "bad HTTP request from 10.0.0.7: 400 Invalid header value char:"  # no header echoed


def test_other_aiohttp_errors_keep_their_traceback(aiohttp_log: io.StringIO) -> None:
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        logging.getLogger("aiohttp.server").exception("Error handling request")
    entry = json.loads(aiohttp_log.getvalue())
    assert entry["level"] == "error" and "RuntimeError: a bug" in entry["exception"]


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_a_lone_surrogate_is_logged_escaped(formatter: logging.Formatter) -> None:
    record = logging.LogRecord("canaryd", logging.INFO, "", 0, "alert %s", ("\ud800",), None)
    text = formatter.format(record)
    assert "\\ud800" in text
    text.encode("utf-8")  # a UTF-8 stream can write it
