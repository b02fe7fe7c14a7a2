"""Log formats: one JSON object per line (fields at the top level, exceptions included), readable text, and
a dictConfig that routes gateway, uvicorn and gunicorn loggers through one handler with no access log."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from gateway.ops.logs import JsonFormatter, TextFormatter, logging_config
from tests.server import ROOT


def record(message: str = "stream close", **fields: object) -> logging.LogRecord:
    made = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, message, None, None)
    made.fields = fields
    return made


def test_json_is_one_line_with_the_fields_at_the_top() -> None:
    line = JsonFormatter().format(record(request_id="r1", reason="client", duration_s=1.5, path="/a\nb"))
    assert "\n" not in line
    decoded = json.loads(line)
    assert decoded["msg"] == "stream close"
    assert decoded["level"] == "info"
    assert decoded["logger"] == "gateway.access"
    assert decoded["request_id"] == "r1"
    assert decoded["duration_s"] == 1.5
    assert decoded["path"] == "/a\nb"
    assert decoded["ts"].endswith("Z")


def test_json_carries_exceptions_and_odd_values() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        made = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("now",), sys.exc_info())
    made.fields = {"thing": object()}
    decoded = json.loads(JsonFormatter().format(made))
    assert decoded["msg"] == "failed now"
    assert "ValueError: bad" in decoded["exc"]
    assert decoded["thing"].startswith("<object")


def test_text_is_readable() -> None:
    line = TextFormatter().format(record("request", status=200, path="/api/Todos", query="a b"))
    assert "INFO" in line
    assert "gateway.access: request status=200 path=/api/Todos query='a b'" in line


@pytest.mark.parametrize(("fmt", "level"), [("xml", "info"), ("json", "loud")])
def test_config_rejects_unknown_values(fmt: str, level: str) -> None:
    with pytest.raises(ValueError, match="log"):
        logging_config(fmt, level)


def test_config_applies_one_format_everywhere() -> None:
    """Applied in a fresh interpreter (dictConfig is process-wide): JSON lines on stderr for the gateway's,
    uvicorn's and gunicorn's loggers, nothing for uvicorn's access logger."""
    program = """
import logging, logging.config
from gateway.ops.logs import logging_config
logging.config.dictConfig(logging_config("json", "info"))
logging.getLogger("gateway.access").info("request", extra={"fields": {"status": 200}})
logging.getLogger("uvicorn.error").info("Started server process")
logging.getLogger("gunicorn.error").info("Booting worker")
logging.getLogger("uvicorn.access").info("GET / 200")
logging.getLogger("gateway.relay").debug("too detailed")
"""
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(line["logger"], line["msg"]) for line in lines] == [
        ("gateway.access", "request"),
        ("uvicorn.error", "Started server process"),
        ("gunicorn.error", "Booting worker"),
    ]
    assert lines[0]["status"] == 200
