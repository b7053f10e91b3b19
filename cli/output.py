"""Human tables and --json output, so every listing speaks both."""
from __future__ import annotations

import json
import logging
from typing import Any, Iterable, Sequence

import click


def emit(rows: Sequence[dict[str, Any]], columns: Sequence[str], as_json: bool) -> None:
    """Print ``rows`` as JSON (all keys) or as an aligned table of ``columns``."""
    if as_json:
        click.echo(json.dumps(list(rows), ensure_ascii=False, indent=2, default=str))
        return
    if not rows:
        click.echo("(none)")
        return
    widths = {c: max(len(c), *(len(_cell(r.get(c))) for r in rows)) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        click.echo("  ".join(_cell(row.get(c)).ljust(widths[c]) for c in columns).rstrip())


def emit_one(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(record, ensure_ascii=False, indent=2, default=str))
        return
    width = max(len(k) for k in record)
    for key, value in record.items():
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value) or "-"
        click.echo(f"{key.ljust(width)}  {_cell(value)}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return ", ".join(str(v) for v in value)
    return str(value)


def progress(message: str) -> None:
    """Progress for long operations goes to stderr so stdout stays parseable; in a
    long-running command that configured its log (cli/logs.py), it is a log line like the
    others, so the whole of stderr keeps one shape."""
    from cli.logs import configured

    if configured() is not None:
        logging.getLogger("tincay.cli").info(message)
    else:
        click.echo(f"… {message}", err=True)
