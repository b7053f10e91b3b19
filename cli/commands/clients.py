"""``tincay client``: the applications allowed to call tincay's HTTP APIs (remote signing now,
the registration API next), registered by the operator (ca/services/clients.py).

A client's secret is printed once, by ``client add``, and kept nowhere but as a hash: an
operator who loses it disables the client and adds a new one. Secrets never travel through
argv: none of these commands takes one.

A client may also log in with a TLS client certificate (RFC 8705 tls_client_auth), bound with
``client add --cert-file`` or ``client bind`` (a PEM file, or tincay's own certificate by
``--ca`` and ``--serial``) and unbound with ``client unbind``; `tincay serve` asks for it
(``--client-ca``, or tincay's own CAs with ``--tls-self``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ca.errors import TincayError
from cli.output import emit, emit_one
from cli.shell import app_context, json_option
from ra.authz import ROLES


class ClientNameError(TincayError):
    """A name the registry refuses: one line on stderr, exit status 1, as the other errors."""


@click.group(name="client")
def client_group() -> None:
    """Registered API clients (OAuth 2.0 client credentials, RFC 6749 4.4)."""


class CertificateFileError(TincayError):
    """A --cert-file that holds no certificate: one line naming the file."""


def _record(client: Any) -> dict[str, Any]:
    return {"name": client.name, "client_id": client.client_id, "status": client.status,
            "role": client.role, "cas": list(client.cas), "profiles": list(client.profiles),
            "created_at": client.created_at}


cert_file_option = click.option(
    "--cert-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A PEM file whose first certificate is the client's TLS client certificate.")


def certificate_options(command: Any) -> Any:
    """--cert-file, or --ca and --serial: how bind and unbind name a certificate."""
    command = click.option("--serial", help="The certificate's serial, hexadecimal "
                                            "(with --ca).")(command)
    command = click.option("--ca", help="The tincay CA that issued the certificate "
                                        "(with --serial).")(command)
    return cert_file_option(command)


def certificate_der(path: Path) -> bytes:
    """The DER of the first certificate in the PEM file ``path`` (a client's file often holds
    its chain after it), or CertificateFileError naming the file."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise CertificateFileError(f"{path}: {exc.strerror}") from None
    except ValueError:
        raise CertificateFileError(f"{path}: no PEM certificate (-----BEGIN CERTIFICATE-----) "
                                   "that parses") from None
    return certs[0].public_bytes(Encoding.DER)


def _certificate_choice(cert_file: Path | None, ca: str | None, serial: str | None
                        ) -> dict[str, Any]:
    """--cert-file, or --ca with --serial: exactly one of the two ways to name a certificate."""
    if (cert_file is None) == (ca is None and serial is None) or (ca is None) != (serial is None):
        raise click.UsageError("name the certificate with --cert-file PEM, or with --ca CA and "
                               "--serial HEX")
    if cert_file is not None:
        return {"der": certificate_der(cert_file)}
    return {"ca": ca, "serial": serial}


@client_group.command(name="add")
@click.argument("name")
@click.option("--role", type=click.Choice(sorted(ROLES)),
              help="What the client may do in the registration API (CSC clients need none).")
@click.option("--ca", "cas", multiple=True, help="A CA the client may use (repeatable).")
@click.option("--profile", "profiles", multiple=True,
              help="A profile the client may use (repeatable).")
@cert_file_option
@json_option
def client_add(name: str, role: str | None, cas: tuple[str, ...], profiles: tuple[str, ...],
               cert_file: Path | None, as_json: bool) -> None:
    """Register client NAME and print its id and secret (the secret only this once); with
    --cert-file, the client may also log in with that TLS client certificate."""
    der = certificate_der(cert_file) if cert_file is not None else None
    try:
        added = app_context().service.clients.add(name, role=role, cas=cas, profiles=profiles,
                                                  certificate=der)
    except ValueError as exc:  # the name's rule
        raise ClientNameError(str(exc)) from None
    bound = {"certificate_sha256": _fingerprint(der)} if der is not None else {}
    if as_json:
        emit_one({"name": added.client.name, "client_id": added.client.client_id,
                  "client_secret": added.client_secret, **bound}, True)
        return
    click.echo(f"client {added.client.name} registered")
    click.echo(f"client_id      {added.client.client_id}")
    click.echo(f"client_secret  {added.client_secret}")
    if der is not None:
        click.echo(f"certificate    {bound['certificate_sha256']} (SHA-256)")
    click.echo("The secret is shown only this once and cannot be recovered: store it now.",
               err=True)


@client_group.command(name="list")
@json_option
def client_list(as_json: bool) -> None:
    """Registered clients (never their secrets)."""
    clients = app_context().service.clients
    bound: dict[str, list[dict[str, Any]]] = {}
    for binding in clients.certificate_bindings():
        bound.setdefault(binding.client, []).append(binding.as_dict())
    rows = [{**_record(c), "certificates": bound.get(c.name, [])} for c in clients.list()]
    if not as_json:  # the table shows how many; --json and `client bind` show which
        rows = [{**row, "certificates": len(row["certificates"])} for row in rows]
    emit(rows, ["name", "client_id", "status", "role", "cas", "profiles", "certificates",
                "created_at"], as_json)


@client_group.command(name="disable")
@click.argument("name")
@json_option
def client_disable(name: str, as_json: bool) -> None:
    """Disable client NAME (or its id): its secret and every token it holds stop working."""
    client = app_context().service.clients.disable(name)
    if as_json:
        emit_one(_record(client), True)
    else:
        click.echo(f"client {client.name} disabled")


def _fingerprint(der: bytes) -> str:
    from ca.services.client_bindings import fingerprint

    return fingerprint(der)


def _emit_binding(binding: Any, verb: str, as_json: bool) -> None:
    if as_json:
        emit_one({"client": binding.client, **binding.as_dict()}, True)
    else:
        click.echo(f"certificate {binding.serial_hex} of {binding.issuer} {verb} client "
                   f"{binding.client} (SHA-256 {binding.fingerprint_sha256})")


@client_group.command(name="bind")
@click.argument("name")
@certificate_options
@json_option
def client_bind(name: str, cert_file: Path | None, ca: str | None, serial: str | None,
                as_json: bool) -> None:
    """Let client NAME log in with a TLS client certificate (RFC 8705 tls_client_auth)."""
    binding = app_context().service.clients.bind_certificate(
        name, **_certificate_choice(cert_file, ca, serial))
    _emit_binding(binding, "bound to", as_json)


@client_group.command(name="unbind")
@click.argument("name")
@certificate_options
@click.option("--fingerprint", help="The certificate's SHA-256 fingerprint, as `client list "
                                    "--json` shows it (or openssl x509 -fingerprint -sha256).")
@json_option
def client_unbind(name: str, cert_file: Path | None, ca: str | None, serial: str | None,
                  fingerprint: str | None, as_json: bool) -> None:
    """Stop client NAME logging in with a TLS client certificate (the certificate itself
    stays valid: `tincay revoke` ends it everywhere)."""
    if fingerprint is not None and (cert_file or ca or serial):
        raise click.UsageError("name the certificate one way: --fingerprint, --cert-file, or "
                               "--ca and --serial")
    choice = ({"fingerprint": fingerprint} if fingerprint is not None
              else _certificate_choice(cert_file, ca, serial))
    binding = app_context().service.clients.unbind_certificate(name, **choice)
    _emit_binding(binding, "unbound from", as_json)
