"""Subscriber certificates: issue one, the ``tincay cert`` listings and exports, and the audit
log. Revocation lives in cli.commands.revocation.

Issuance refreshes the serial's pre-produced OCSP answer at once (cli.commands.ocsp), so a
responder never serves a stale status after the command returns.
"""
from __future__ import annotations

from pathlib import Path

import click

from cli.commands.batch import BATCH_HELP, issue_batch
from cli.commands.ocsp import preproduce
from cli.output import emit, emit_one, progress
from cli.shell import (FORMATS, OutputError, app_context, check_writable,
                       encode_certificates, json_option, write_output)


# --- issuance -------------------------------------------------------------------------------

@click.command()
@click.option("--ca", "ca_name", required=True, help="The issuing CA.")
@click.option("--profile", "profile_name", help="Certificate profile.")
@click.option("--subject",
              help="Subject, e.g. 'CN=Nguyễn Văn A,UID=CCCD:012345678901,C=VN'.")
@click.option("--csr", "csr_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PKCS#10 request (PEM or DER); only its public key is used.")
@click.option("--generate-key", is_flag=True,
              help="Generate the subscriber's key in the HSM, stored wrapped under the HSM's "
                   "key-encryption key (never in the clear outside the HSM).")
@click.option("--key-type", help="With --generate-key: rsa-2048, ec-p256, ... "
                                 "(default: the profile's first).")
@click.option("--key-storage", type=click.Choice(["wrapped", "token"]),
              help="With --generate-key: wrapped (default) under the HSM's key-encryption key "
                   "and kept in the database, or token: an object of its own on the token, for "
                   "a signing application that uses the key through PKCS#11 by its label.")
@click.option("--email", "emails", multiple=True, help="rfc822Name SAN (repeatable).")
@click.option("--dns", "dns_names", multiple=True, help="dNSName SAN (repeatable).")
@click.option("--days", type=click.IntRange(min=1), help="Validity in days (profile default).")
@click.option("--out", help="Where to write the certificate (PEM), - for stdout.")
@click.option("--batch", "batch_file",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Issue one certificate per row of this file instead: columns profile, "
                   "subject, and key_type (made on the HSM, wrapped) or csr (PEM text or a "
                   "path relative to the file); optional email, dns (';'-separated) and days. "
                   + BATCH_HELP + " A rerun issues only the rows not issued before.")
@click.option("--results", type=click.Path(dir_okay=False, path_type=Path),
              help="With --batch: one line per row (row, serial, status issued / "
                   "already-issued / error, field, error), in the batch file's format.")
@click.option("--batch-size", type=click.IntRange(1, 10000), default=200, show_default=True,
              help="With --batch: rows persisted (and then recorded) per transaction.")
@json_option
def issue(ca_name: str, profile_name: str | None, subject: str | None, csr_file: Path | None,
          generate_key: bool, key_type: str | None, key_storage: str | None,
          emails: tuple[str, ...], dns_names: tuple[str, ...], days: int | None,
          out: str | None, batch_file: Path | None, results: Path | None, batch_size: int,
          as_json: bool) -> None:
    """Issue a certificate from a profile, for a CSR or a key generated on the HSM; or, with
    --batch, one per row of a file (exit status 1 if any row failed)."""
    if batch_file is not None:
        if profile_name or subject or csr_file or generate_key or key_type or key_storage \
                or emails or dns_names or days or out or as_json:
            raise click.UsageError("--batch takes its profile, subject, keys and SANs from "
                                   "the file: give only --ca, --results and --batch-size")
        issue_batch(ca_name, batch_file, results, batch_size)
        return
    if results is not None:
        raise click.UsageError("--results goes with --batch")
    for option, value in (("--profile", profile_name), ("--subject", subject), ("--out", out)):
        if value is None:
            raise click.UsageError(f"Missing option '{option}' (or give --batch FILE).")
    assert profile_name is not None and subject is not None and out is not None
    from ca import issuance
    from ca.errors import CSRError
    from ca.keys.base import KeySpec
    from ca.services import KeySource
    from ca.subject import parse_subject

    if (csr_file is None) == (not generate_key):
        raise click.UsageError("give exactly one of --csr FILE and --generate-key")
    if key_type and not generate_key:
        raise click.UsageError("--key-type goes with --generate-key")
    if key_storage and not generate_key:
        raise click.UsageError("--key-storage goes with --generate-key")
    check_writable(out)
    app = app_context()
    if csr_file is not None:
        try:
            source = KeySource(csr=issuance.load_csr(csr_file.read_bytes()))
        except CSRError as exc:
            raise CSRError(f"{csr_file}: {exc}") from None
    else:
        profile = app.profiles.get(profile_name)
        if key_type:
            spec = KeySpec.parse(key_type)
        elif profile.key_algorithms:
            spec = profile.key_algorithms[0]
        else:
            raise click.UsageError(f"profile {profile_name} lists no key algorithm: "
                                   "give --key-type")
        source = KeySource(generate=spec, token_object=key_storage == "token")
    issued = app.service.issuance.issue(ca_name, profile_name, parse_subject(subject), source,
                                        emails=emails, dns_names=dns_names, days=days,
                                        progress=progress)
    preproduce(ca_name, issued.serial_hex)
    try:
        write_output(out, issued.pem)
    except click.FileError as exc:  # checked above, but the disk may still refuse
        raise OutputError(
            f"certificate {issued.serial_hex} of {ca_name} was issued, but writing {out} "
            f"failed ({exc.message}); export it with: tincay cert export "
            f"{issued.serial_hex} --ca {ca_name} --out FILE") from None
    record = app.service.listings.show_certificate(issued.serial_hex, ca_name)
    if as_json:
        emit_one(record, True)
    elif out != "-":
        click.echo(f"issued {issued.profile} certificate {issued.serial_hex} under {ca_name} "
                   f"-> {out}" + (f" (key {issued.key_uri})" if issued.key_uri else ""))


# --- certificates ---------------------------------------------------------------------------

@click.group(name="cert")
def cert_group() -> None:
    """Issued certificates."""


@cert_group.command(name="list")
@click.option("--ca", "ca_name", help="Only this CA's certificates.")
@click.option("--profile", help="Only this profile.")
@click.option("--status", type=click.Choice(["pending", "issued", "failed", "revoked"]))
@click.option("--subject", "subject_contains", help="Subject contains this text.")
@click.option("--limit", type=click.IntRange(1, 100000), default=100, show_default=True)
@json_option
def cert_list(ca_name: str | None, profile: str | None, status: str | None,
              subject_contains: str | None, limit: int, as_json: bool) -> None:
    """List certificates, newest first."""
    rows = app_context().service.listings.list_certificates(
        ca=ca_name, profile=profile, status=status, subject_contains=subject_contains,
        limit=limit)
    emit(rows, ["issuer", "serial", "status", "profile", "subject", "not_after"], as_json)


@cert_group.command(name="show")
@click.argument("serial")
@click.option("--ca", "ca_name", help="The issuing CA (needed only if the serial is ambiguous).")
@json_option
def cert_show(serial: str, ca_name: str | None, as_json: bool) -> None:
    """Show a certificate by serial (hex, as `openssl x509 -serial` prints it)."""
    emit_one(app_context().service.listings.show_certificate(serial, ca_name), as_json)


@cert_group.command(name="export")
@click.argument("serial")
@click.option("--ca", "ca_name", help="The issuing CA (needed only if the serial is ambiguous).")
@click.option("--format", "fmt", type=FORMATS, default="pem", show_default=True)
@click.option("--out", default="-", show_default=True, help="Output file, - for stdout.")
def cert_export(serial: str, ca_name: str | None, fmt: str, out: str) -> None:
    """Export a certificate."""
    from cryptography import x509

    der = app_context().service.listings.certificate_der(serial, ca_name)
    write_output(out, encode_certificates([x509.load_der_x509_certificate(der)], fmt))
