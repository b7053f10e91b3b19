"""Click parameter types shared by the commands."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import click

from ca.durations import parse_duration

# what each --worker-class name runs (cli/serve.py): gunicorn's workers under tincay's deadlines
WORKERS = {"gevent_pywsgi": "cli.pywsgi_worker.TincayPyWSGIWorker",
           "gthread": "cli.gthread_worker.TincayThreadWorker"}
WORKER_CLASSES = tuple(WORKERS)


class DurationType(click.ParamType):
    """``7d``, ``12h``, ``1d12h``, ``90m`` (ca/durations.py); with ``allow_off``, ``off``."""

    name = "duration"

    def __init__(self, allow_off: bool = False) -> None:
        self.allow_off = allow_off

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, timedelta) or value is None:
            return value
        if self.allow_off and str(value).strip().lower() == "off":
            return "off"
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
