"""Revocation and its publication: revoke, release from certificateHold, and publish a CRL.

Revocation and release refresh the serial's pre-produced OCSP answer at once
(cli.commands.ocsp), so a responder never serves the old status after the command returns.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from cli.commands.batch import BATCH_HELP, revoke_batch
from cli.commands.ocsp import preproduce
from cli.output import emit_one
from cli.params import DurationType
from cli.shell import FORMATS, app_context, aware, json_option, write_output


@click.command()
@click.argument("serial", required=False)
@click.option("--ca", "ca_name", required=True, help="The CA that issued the certificate.")
@click.option("--reason",
              help="RFC 5280 reason: unspecified, keyCompromise, cACompromise, "
                   "affiliationChanged, superseded, cessationOfOperation, certificateHold, "
                   "privilegeWithdrawn, aACompromise.")
@click.option("--invalidity-date", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="When the key is known or suspected to have been compromised (UTC).")
@click.option("--batch", "batch_file",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Revoke the certificate of each row of this file instead: columns serial "
                   "(hex), reason, optional invalidity_date (ISO 8601, UTC). " + BATCH_HELP)
@click.option("--results", type=click.Path(dir_okay=False, path_type=Path),
              help="With --batch: one line per row (row, serial, status revoked / "
                   "already-revoked / error, field, error), in the batch file's format.")
@json_option
def revoke(serial: str | None, ca_name: str, reason: str | None, invalidity_date: Any,
           batch_file: Path | None, results: Path | None, as_json: bool) -> None:
    """Revoke a certificate (SERIAL in hex as `openssl x509 -serial` prints it), or with
    --batch those a file lists (exit status 1 if any row failed)."""
    if batch_file is not None:
        if serial or reason or invalidity_date or as_json:
            raise click.UsageError("--batch takes serials and reasons from the file: give "
                                   "only --ca and --results")
        revoke_batch(ca_name, batch_file, results)
        return
    if results is not None:
        raise click.UsageError("--results goes with --batch")
    if serial is None or reason is None:
        raise click.UsageError("give SERIAL and --reason (or --batch FILE)")
    record = app_context().service.revocation.revoke(ca_name, serial, reason,
                                                     invalidity_date=aware(invalidity_date))
    preproduce(ca_name, record["serial"])
    if as_json:
        emit_one(record, True)
    else:
        click.echo(f"revoked {record['serial']} of {ca_name}: {record['revocation_reason']} "
                   f"at {record['revoked_at'].isoformat()}")


@click.command()
@click.argument("serial")
@click.option("--ca", "ca_name", required=True, help="The CA that issued the certificate.")
def release(serial: str, ca_name: str) -> None:
    """Release a certificate from certificateHold: it is valid again."""
    record = app_context().service.revocation.release_hold(ca_name, serial)
    preproduce(ca_name, record["serial"])
    click.echo(f"released {record['serial']} of {ca_name} from hold")


@click.command(name="crl")
@click.option("--ca", "ca_name", required=True, help="The CA whose CRL to publish.")
@click.option("--delta", is_flag=True,
              help="A delta CRL over the latest complete CRL (served at /crl/<ca>-delta.crl).")
@click.option("--out", default=None, help="Also write the CRL here (- for stdout).")
@click.option("--format", "fmt", type=FORMATS, default="der", show_default=True)
@click.option("--validity", type=DurationType(),
              help="nextUpdate - thisUpdate, e.g. 7d or 12h [the CA's setting].")
@json_option
def crl_command(ca_name: str, delta: bool, out: str | None, fmt: str,
                validity: timedelta | None, as_json: bool) -> None:
    """Publish a new CRL of a CA (served at /crl/<ca>.crl, deltas at /crl/<ca>-delta.crl)."""
    info = app_context().service.publication.publish_crl(ca_name, validity=validity, delta=delta)
    if out is not None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        data = info.der if fmt == "der" else x509.load_der_x509_crl(info.der).public_bytes(
            serialization.Encoding.PEM)
        write_output(out, data)
    record = {"ca": info.ca, "number": info.number, "delta_base": info.delta_base,
              "this_update": info.this_update, "next_update": info.next_update,
              "entries": info.entries}
    if as_json:
        emit_one(record, True)
    elif out != "-":
        kind = f"delta CRL {info.number} (base {info.delta_base})" if delta else \
            f"CRL {info.number}"
        click.echo(f"{kind} of {ca_name}: {info.entries} entries, next update "
                   f"{info.next_update.isoformat()}")
