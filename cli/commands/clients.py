"""``tincay client``: the applications allowed to call tincay's HTTP APIs (remote signing now,
the registration API next), registered by the operator (ca/services/clients.py).

A client's secret is printed once, by ``client add``, and kept nowhere but as a hash: an
operator who loses it disables the client and adds a new one. Secrets never travel through
argv: none of these commands takes one.
"""
from __future__ import annotations

from typing import Any

import click

from ca.errors import TincayError
from cli.output import emit, emit_one
from cli.shell import app_context, json_option


class ClientNameError(TincayError):
    """A name the registry refuses: one line on stderr, exit status 1, as the other errors."""


@click.group(name="client")
def client_group() -> None:
    """Registered API clients (OAuth 2.0 client credentials, RFC 6749 4.4)."""


def _record(client: Any) -> dict[str, Any]:
    return {"name": client.name, "client_id": client.client_id, "status": client.status,
            "role": client.role, "cas": list(client.cas), "profiles": list(client.profiles),
            "created_at": client.created_at}


@client_group.command(name="add")
@click.argument("name")
@click.option("--role", help="What the client may do, for the APIs that check it.")
@click.option("--ca", "cas", multiple=True, help="A CA the client may use (repeatable).")
@click.option("--profile", "profiles", multiple=True,
              help="A profile the client may use (repeatable).")
@json_option
def client_add(name: str, role: str | None, cas: tuple[str, ...], profiles: tuple[str, ...],
               as_json: bool) -> None:
    """Register client NAME and print its id and secret (the secret only this once)."""
    try:
        added = app_context().service.clients.add(name, role=role, cas=cas, profiles=profiles)
    except ValueError as exc:  # the name's rule
        raise ClientNameError(str(exc)) from None
    if as_json:
        emit_one({"name": added.client.name, "client_id": added.client.client_id,
                  "client_secret": added.client_secret}, True)
        return
    click.echo(f"client {added.client.name} registered")
    click.echo(f"client_id      {added.client.client_id}")
    click.echo(f"client_secret  {added.client_secret}")
    click.echo("The secret is shown only this once and cannot be recovered: store it now.",
               err=True)


@client_group.command(name="list")
@json_option
def client_list(as_json: bool) -> None:
    """Registered clients (never their secrets)."""
    rows = [_record(c) for c in app_context().service.clients.list()]
    emit(rows, ["name", "client_id", "status", "role", "cas", "profiles", "created_at"], as_json)


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
