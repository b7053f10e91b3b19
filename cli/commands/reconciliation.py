"""``tincay reconcile``: what a crash during issuance left (pending rows, orphaned HSM keys),
listed, and resolved with ``--apply`` (ca.services.reconciliation says how and why).

Exit status 3 when something is left for ``--apply`` to resolve (so cron can alert on it),
0 when nothing is; rows and keys younger than ``--grace`` are listed and do not count.
"""
from __future__ import annotations

from datetime import timedelta

import click

from cli.commands.ocsp import preproduce
from cli.output import emit
from cli.params import DurationType
from cli.shell import app_context, json_option

NEEDS_ACTION = 3  # distinct from 1 (an operator error) and 2 (a usage error)
COLUMNS = ["kind", "ca", "serial", "key", "since", "action", "done"]


@click.command()
@click.option("--apply", "apply_", is_flag=True,
              help="Revoke pending serials as never issued and destroy orphaned keys "
                   "(default: only list what would be done).")
@click.option("--grace", type=DurationType(), default="10m", show_default=True,
              help="Leave rows and keys younger than this alone: another process may be "
                   "issuing them right now.")
@click.option("--reason", default="cessationOfOperation", show_default=True,
              help="RFC 5280 reason a never-issued serial is revoked with.")
@json_option
def reconcile(apply_: bool, grace: timedelta, reason: str, as_json: bool) -> None:
    """List what interrupted issuances left behind (pending certificates, orphaned and
    unknown HSM keys) and, with --apply, resolve it; every action is audited."""
    app = app_context()
    findings = app.service.reconciliation.reconcile(apply=apply_, grace=grace, reason=reason)
    for finding in findings:
        if finding.done and finding.done.startswith("revoked"):
            assert finding.ca is not None and finding.serial is not None
            preproduce(finding.ca, finding.serial)  # OCSP says revoked at once
    emit([f.describe() for f in findings], COLUMNS, as_json)
    if any(f.resolvable and f.done is None for f in findings):
        if not as_json:
            click.echo("tincay reconcile --apply resolves what is listed", err=True)
        raise click.exceptions.Exit(NEEDS_ACTION)
