"""How the long-running commands log: one JSON object per line (TINCAY_LOG_FORMAT=json, the
default) or gunicorn-style text lines, at TINCAY_LOG_LEVEL (ca.settings.log_settings).

JSON lines because a log shipper (Loki's promtail, Vector, Filebeat) reads them without a
parser of its own, and a field such as ``status`` or ``duration_ms`` stays a field instead
of a word to find again with a regular expression. Each line has ``time`` (UTC, ISO 8601,
milliseconds), ``level``, ``logger``, ``message``, ``pid``, and the structured fields a caller
passed in ``extra`` (web/metrics.py's request events: ``event``, ``method``, ``path``,
``status``, ``duration_ms``, ``endpoint``, ``remote``, ``client``); a traceback is the
``exception`` field, a string, so it stays on its line.

The standard library's logging and a formatter of 20 lines: no dependency. Every logger
of the process writes through the root logger's one handler (stderr); gunicorn's own
``gunicorn.error`` logger keeps its handler, given the same formatter by cli/serve.py's
``_Log``; Python's warnings are routed through logging too, so nothing else writes lines of
another shape to stderr.

Secrets stay out by construction: nothing logs a request's headers, body or query string,
and the services' messages name clients, credentials and units, never a PIN, OTP, SAD or
token (tests/test_logs.py greps a whole server's log for them).
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import IO, Any

from ca.settings import LogSettings, log_settings

TEXT_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"
# a LogRecord's own attributes: whatever else a record carries came in ``extra``
_OWN = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_configured: LogSettings | None = None


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON (UTF-8 text as is: Vietnamese names stay readable)."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage(), "pid": record.process}
        for key, value in vars(record).items():
            if key not in _OWN and not key.startswith("_"):
                event[key] = value
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            event["stack"] = self.formatStack(record.stack_info)
        return json.dumps(event, ensure_ascii=False, default=str)


def formatter(settings: LogSettings) -> logging.Formatter:
    """The formatter ``settings`` name."""
    if settings.format == "json":
        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT)


def configure(settings: LogSettings | None = None, stream: IO[str] | None = None) -> LogSettings:
    """Every logger of this process to ``stream`` (stderr) in the format and from the level
    of ``settings`` (TINCAY_LOG_* when None); called again, replaces what it set."""
    global _configured
    settings = settings or log_settings()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_tincay", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(settings))
    handler._tincay = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(settings.level.upper())
    logging.captureWarnings(True)
    _configured = settings
    return settings


def configured() -> LogSettings | None:
    """The settings :func:`configure` applied in this process, None if it was not called
    (a one-shot command, whose output is for a person or a script)."""
    return _configured
