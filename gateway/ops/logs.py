"""Log output: one JSON object per line in production, readable text for `make run`.

Both formats carry the same facts. A record's structured fields travel in `extra={"fields": {...}}` (the
request log's method, path, status, duration, request id, ...): the JSON formatter puts them at the top level
of the line, the text formatter appends them as `key=value`. The same dictConfig serves every way the gateway
runs: `gateway serve` hands it to uvicorn, `deploy/gunicorn.conf.py` to gunicorn (whose uvicorn workers route
uvicorn's loggers to gunicorn's error logger), so server, access and application lines share one format.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

ACCESS_LOGGER = "gateway.access"
_LEVELS = {"critical", "error", "warning", "info", "debug"}


class JsonFormatter(logging.Formatter):
    """`{"ts": ..., "level": ..., "logger": ..., "msg": ..., <fields>}` on one line; never raises."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """`2026-01-02T03:04:05.678Z INFO gateway.access request key=value ...` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{_timestamp(record.created)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            text += " " + " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _timestamp(created: float) -> str:
    seconds = int(created)
    milliseconds = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{milliseconds:03d}Z"


def _text_value(value: object) -> str:
    text = str(value)
    return repr(text) if (not text or " " in text or '"' in text) else text


def logging_config(fmt: str = "text", level: str = "info") -> dict[str, Any]:
    """A `logging.config.dictConfig` mapping for `fmt` ("json" or "text") at `level`.

    uvicorn's access log is switched off (its logger gets no handler, so uvicorn skips formatting it): the
    request log middleware writes one richer line per request instead. Gunicorn's loggers are included so that
    `logconfig_dict` replaces its defaults entirely.
    """
    if fmt not in ("json", "text"):
        raise ValueError(f"log format must be json or text, not {fmt!r}")
    if level.lower() not in _LEVELS:
        raise ValueError(f"log level must be one of {', '.join(sorted(_LEVELS))}, not {level!r}")
    upper = level.upper()
    formatter = JsonFormatter if fmt == "json" else TextFormatter

    def quiet() -> dict[str, Any]:
        return {"handlers": [], "level": "WARNING", "propagate": False}

    def own() -> dict[str, Any]:
        return {"handlers": ["console"], "level": upper, "propagate": False}

    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"gateway": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "gateway",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["console"], "level": "WARNING"},
        "loggers": {
            "gateway": own(),
            "uvicorn": own(),
            "uvicorn.error": {"level": upper},
            "uvicorn.access": quiet(),
            "gunicorn.error": own(),
            "gunicorn.access": quiet(),
        },
    }
