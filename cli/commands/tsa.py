"""``tincay tsa``: the time-stamp authority's log of granted tokens."""
from __future__ import annotations

from typing import Any

import click

from cli.output import emit
from cli.shell import app_context, aware, json_option


@click.group(name="tsa")
def tsa_group() -> None:
    """The time-stamp authority."""


@tsa_group.command(name="log")
@click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="Only tokens granted at or after this time (UTC).")
@click.option("--serial", help="Only the token with this serial (hex).")
@click.option("--unit", help="Only this TSA unit's tokens.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
@json_option
def tsa_log(since: Any, serial: str | None, unit: str | None, limit: int,
            as_json: bool) -> None:
    """Granted time-stamp tokens, newest first."""
    rows = app_context().service.token_log.find(unit=unit, since=aware(since), serial=serial,
                                                limit=limit)
    emit(rows, ["gen_time", "unit", "serial", "imprint_algorithm", "policy", "requester"],
         as_json)
