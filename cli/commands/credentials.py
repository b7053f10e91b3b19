"""``tincay credential``: remote-signing credentials (enrol, list, disable, unlock, reset) and
``tincay csc log``: the signature log.

PINs are never options: they come from a file (``--pin-file``) or a hidden prompt typed twice.
The otpauth:// URI (the signer's TOTP seed) is printed once, with a QR code for the signer's
authenticator app, and exists nowhere else afterwards.
"""
from __future__ import annotations

import dataclasses
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from ca.clock import UTC
from ca.durations import parse_duration
from cli.output import emit, emit_one
from cli.shell import app_context, json_option

_COLUMNS = ["credential_id", "user_id", "status", "certificate_status", "authority", "serial",
            "clients"]

pin_file_option = click.option(
    "--pin-file", type=click.Path(dir_okay=False, path_type=Path),
    help="Read the signer's PIN from this file (first line); else a hidden prompt, twice.")


def _pin(pin_file: Path | None) -> str:
    if pin_file is not None:
        try:
            text = pin_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot read the PIN file {pin_file}: "
                                       f"{exc.strerror}") from None
        pin = text.splitlines()[0].strip() if text.strip() else ""
        if not pin:
            raise click.ClickException(f"the PIN file {pin_file} is empty")
        return pin
    return click.prompt("Signer's PIN", hide_input=True, confirmation_prompt=True)


def _record(info: Any) -> dict[str, Any]:
    return {"credential_id": info.credential_id, "user_id": info.user_id,
            "status": info.status, "certificate_status": info.certificate_status,
            "authority": info.authority, "serial": info.serial_hex,
            "key_algorithm": info.key_algorithm_oid, "key_length": info.key_length,
            "multisign": info.multisign, "clients": list(info.clients),
            "created_at": info.created_at}


def _show_uri(uri: str) -> None:
    """The URI and its QR code, for the signer's authenticator app."""
    import qrcode

    click.echo(f"otpauth URI (shown once): {uri}")
    code = qrcode.QRCode(border=2)
    code.add_data(uri)
    drawing = io.StringIO()
    code.print_ascii(out=drawing, invert=True)  # dark modules blank: right on dark terminals
    click.echo(drawing.getvalue(), nl=False)


def _operator_error(action: Any) -> Any:
    try:
        return action()
    except ValueError as exc:  # a rule the input broke (PIN length, user id): one line
        raise click.ClickException(str(exc)) from None


@click.group(name="credential")
def credential_group() -> None:
    """Remote-signing credentials (CSC API): a certificate whose key is on the HSM, used by
    its holder through registered clients with a PIN and a TOTP code."""


@credential_group.command(name="create")
@click.option("--cert", "serial", required=True, help="Serial (hex) of the issued certificate.")
@click.option("--ca", "authority", help="Its issuing CA (when several CAs issued the serial).")
@click.option("--user", "user_id", required=True, help="The holder, e.g. CCCD:079073009568.")
@click.option("--client", "clients", multiple=True, required=True,
              help="A registered client that may use the credential (repeatable).")
@click.option("--multisign", type=click.IntRange(1, 1000), default=100, show_default=True,
              help="How many hashes one authorisation may cover.")
@pin_file_option
@json_option
def create(serial: str, authority: str | None, user_id: str, clients: tuple[str, ...],
           multisign: int, pin_file: Path | None, as_json: bool) -> None:
    """Enrol a certificate for remote signing; prints the otpauth URI once."""
    pin = _pin(pin_file)
    service = app_context().service
    info, uri = _operator_error(lambda: service.credentials.create(
        serial, user_id, clients, pin, authority=authority, multisign=multisign))
    if as_json:
        click.echo(json.dumps({**_record(info), "otpauth_uri": uri}, ensure_ascii=False,
                              indent=2, default=str))
        return
    click.echo(f"credential {info.credential_id} for {info.user_id} "
               f"({info.authority} {info.serial_hex})")
    _show_uri(uri)


@credential_group.command(name="list")
@click.option("--user", "user_id", help="Only this holder's credentials.")
@json_option
def list_credentials(user_id: str | None, as_json: bool) -> None:
    """Every credential, oldest first."""
    infos = app_context().service.credentials.list_all(user_id)
    emit([_record(i) for i in infos], _COLUMNS, as_json)


@credential_group.command(name="show")
@click.argument("credential_id")
@json_option
def show(credential_id: str, as_json: bool) -> None:
    """One credential."""
    emit_one(_record(app_context().service.credentials.show(credential_id)), as_json)


@credential_group.command(name="disable")
@click.argument("credential_id")
@json_option
def disable(credential_id: str, as_json: bool) -> None:
    """Refuse every authorisation and signature with it from now on."""
    emit_one(_record(app_context().service.credentials.disable(credential_id)), as_json)


@credential_group.command(name="unlock")
@click.argument("credential_id")
@json_option
def unlock(credential_id: str, as_json: bool) -> None:
    """Lift the lock five failed authentications put on it."""
    emit_one(_record(app_context().service.credentials.unlock(credential_id)), as_json)


@credential_group.command(name="reset")
@click.argument("credential_id")
@pin_file_option
@click.option("--new-pin", is_flag=True, help="Set a new PIN (prompted, unless --pin-file).")
@click.option("--new-otp", is_flag=True, help="A new TOTP seed: prints the new otpauth URI.")
@json_option
def reset(credential_id: str, pin_file: Path | None, new_pin: bool, new_otp: bool,
          as_json: bool) -> None:
    """A new PIN and/or TOTP seed for a holder who lost either (a new PIN by default)."""
    pin = _pin(pin_file) if (pin_file is not None or new_pin or not new_otp) else None
    service = app_context().service
    info, uri = _operator_error(lambda: service.credentials.reset(credential_id, pin=pin,
                                                                  new_otp=new_otp))
    if as_json:
        click.echo(json.dumps({**_record(info), "otpauth_uri": uri}, ensure_ascii=False,
                              indent=2, default=str))
        return
    click.echo(f"credential {info.credential_id}: "
               + ", ".join(p for p, on in (("new PIN", pin is not None), ("new OTP seed", new_otp))
                           if on))
    if uri is not None:
        _show_uri(uri)


@click.group(name="csc")
def csc_group() -> None:
    """The remote-signing service (CSC API)."""


def _since(text: str | None, now: datetime) -> datetime | None:
    if text is None:
        return None
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: a duration (7d, 12h) or a time "
                                 "(2026-11-24 or 2026-11-24T08:00:00, UTC)",
                                 param_hint="--since") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@csc_group.command(name="log")
@click.option("--since", help="Only signatures since this long ago (12h, 7d) or this time (UTC).")
@click.option("--user", "user_id", help="Only this holder's signatures.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=1000, show_default=True)
@json_option
def csc_log(since: str | None, user_id: str | None, limit: int, as_json: bool) -> None:
    """Signatures made with remote-signing credentials, newest first."""
    app = app_context()
    rows = app.service.credentials.signatures(
        since=_since(since, app.service.clock.now()), user_id=user_id, limit=limit)
    emit([dataclasses.asdict(r) for r in rows],
         ["at", "user_id", "credential_id", "client", "authority", "serial_hex",
          "sign_algorithm_oid"], as_json)


__all__ = ["credential_group", "csc_group"]
