"""``tincay issue --batch`` and ``tincay revoke --batch``: a progress bar over
ca.services.batch, a summary line, and exit status 1 when any row failed.

The certificates' pre-produced OCSP answers are refreshed once at the end of the batch (one
``tincay ocsp refresh`` of the CA), not one answer per row in between.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import click

from ca.errors import TincayError
from cli.commands.ocsp import preproducer
from cli.shell import app_context, check_writable

BATCH_HELP = ("Rows from FILE: CSV with a header row (.csv, or any file whose first character "
              "is not '{') or JSON lines (.jsonl, .ndjson, .json, or a first character '{').")


def run_batch(kind: str, ca: str, batch: Path, results: Path | None,
              start: Callable[[Any, Any], Any]) -> None:
    """Run ``start(service, on_result)`` with a progress bar on stderr; the summary line, and
    exit 1 if a row failed."""
    from ca.services.batch_files import count_rows, detect_format

    if results is not None:
        if results.resolve() == batch.resolve():
            raise click.UsageError("--results would overwrite the batch file: give another "
                                   "file")
        check_writable(str(results))
    app = app_context()
    total = count_rows(batch, detect_format(batch))
    with click.progressbar(length=total, label=f"{kind} {batch.name}", file=sys.stderr,
                           show_pos=True) as bar:
        summary = start(app.service.batch, lambda _result: bar.update(1))
    try:
        preproducer().refresh(ca)
    except TincayError as exc:  # the certificates stand; the answers can wait
        click.echo(f"tincay: warning: OCSP answers not refreshed ({exc}); run tincay ocsp "
                   "refresh", err=True)
    counts = summary.counts
    done = "issued" if kind == "issuing" else "revoked"
    click.echo(f"{counts.get(done, 0)} {done}, {counts.get('already-' + done, 0)} already "
               f"{done}, {summary.failed} failed"
               + (f" (see {results})" if results is not None and summary.failed else ""))
    if summary.failed:
        raise click.exceptions.Exit(1)


def issue_batch(ca: str, batch: Path, results: Path | None, chunk: int) -> None:
    run_batch("issuing", ca, batch, results,
              lambda service, on_result: service.issue_file(ca, batch, results, chunk=chunk,
                                                            on_result=on_result))


def revoke_batch(ca: str, batch: Path, results: Path | None) -> None:
    run_batch("revoking", ca, batch, results,
              lambda service, on_result: service.revoke_file(ca, batch, results,
                                                             on_result=on_result))
