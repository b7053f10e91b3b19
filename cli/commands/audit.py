"""``tincay audit``: the audit log's listing, and its tamper evidence (issue 22): ``verify``
recomputes the hash chains of the audit, token and signature logs and checks their signed
checkpoints; ``key`` prints the audit key's public key for offline checks;
``checkpoint`` signs the heads now (every ``tincay maintain`` pass does too)."""
from __future__ import annotations

from pathlib import Path

import click

from cli.output import emit, emit_one
from cli.shell import app_context, json_option

TAMPERED = 4  # exit code: verify found a record changed, inserted, deleted or reordered


@click.group(invoke_without_command=True)
@click.option("--ca", "ca_name", help="Only events of this CA.")
@click.option("--serial", help="Only events of this serial.")
@click.option("--limit", type=click.IntRange(1, 100000), default=50, show_default=True)
@json_option
@click.pass_context
def audit(ctx: click.Context, ca_name: str | None, serial: str | None, limit: int,
          as_json: bool) -> None:
    """The audit log (key generations, issuance), newest first; `tincay audit verify`
    checks that no log was rewritten."""
    if ctx.invoked_subcommand is not None:
        return
    emit(app_context().service.listings.list_events(ca=ca_name, serial=serial, limit=limit),
         ["at", "action", "authority", "serial", "subject"], as_json)


@audit.command("verify")
@click.option("--public-key", "public_key", type=click.Path(dir_okay=False, path_type=Path),
              help="The audit key's public key (PEM, from `tincay audit key`) to check the "
                   "checkpoints with instead of the HSM's.")
@json_option
def verify(public_key: Path | None, as_json: bool) -> None:
    """Recompute the audit, token and signature logs' hash chains and check every signed
    checkpoint; name the first bad record of each chain. Exit 4 when one is found."""
    from ca.errors import ConfigurationError

    pem = None
    if public_key is not None:
        try:
            pem = public_key.read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"--public-key {public_key}: {exc.strerror}") from None
    result = app_context().service.audit_chain.verify(pem)
    if as_json:
        emit_one({"ok": result.ok, "chains": [r.as_dict() for r in result.chains]}, True)
    else:
        for report in result.chains:
            click.echo(report.summary(), err=report.problem is not None)
    if not result.ok:
        raise click.exceptions.Exit(TAMPERED)


@audit.command("key")
def key() -> None:
    """Print the audit key's public key (PEM): keep it outside the database."""
    click.echo(app_context().service.audit_chain.public_key_pem().decode("ascii"), nl=False)


@audit.command("checkpoint")
@json_option
def checkpoint(as_json: bool) -> None:
    """Sign every log's head that moved since its last checkpoint, now."""
    signed = app_context().service.audit_chain.checkpoint()
    if as_json:
        emit_one({"checkpoints": signed}, True)
    else:
        click.echo("checkpoints: " + (", ".join(signed) or "none due"))
