"""What every command module shares: the invocation's AppContext and the few helpers for
options and output that more than one command group uses.

Command modules import this, never cli.main, so the root group can import them all without a
cycle and a new service's commands need nothing from the other groups.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import click

from ca.errors import TincayError
from cli.context import AppContext

if TYPE_CHECKING:  # pragma: no cover - typing only
    from cryptography import x509

FORMATS = click.Choice(["pem", "der"])
"""The --format choice of the commands that write certificates or CRLs."""

json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def app_context(*, create_database: bool = False) -> AppContext:
    """The invocation's AppContext, closed (HSM session, engine) when the command ends.

    Only the commands that set a CA up (init, demo) pass ``create_database``: any other
    command on a missing database is an error naming where it looked."""
    click_ctx = click.get_current_context()
    app = click_ctx.find_object(AppContext)
    if app is None:
        app = AppContext(create_database=create_database)
        click_ctx.obj = app
        click_ctx.call_on_close(app.close)
    return app


def write_output(out: str, data: bytes) -> None:
    """Write ``data`` to the file ``out``, or to stdout for ``-``; a failure is a usage error."""
    if out == "-":
        sys.stdout.flush()  # text already written goes first
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    path = Path(out)
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise click.FileError(out, exc.strerror) from None


class OutputError(TincayError):
    """An output file a command cannot write: one line on stderr, exit status 1."""


def check_writable(out: str) -> None:
    """Refuse an output file that cannot be written *before* anything happens: a command that
    generates an HSM key and issues a certificate must not do so and then fail to save it (the
    operator retries, and gets a second certificate)."""
    if out == "-":
        return
    path = Path(out)
    if path.is_dir():
        raise OutputError(f"cannot write {out}: it is a directory")
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write {out}: no directory {folder}")
    if not os.access(path if path.exists() else folder, os.W_OK):
        raise OutputError(f"cannot write {out}: permission denied")


def encode_certificates(certs: Sequence[x509.Certificate], fmt: str) -> bytes:
    """PEM (any number of certificates, concatenated) or DER (exactly one)."""
    from cryptography.hazmat.primitives import serialization

    if fmt == "der":
        if len(certs) != 1:
            raise click.UsageError("DER holds one certificate: use --format pem for a chain")
        return certs[0].public_bytes(serialization.Encoding.DER)
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def aware(value: Any) -> Any:
    """click.DateTime gives naive values: read them as UTC, the only zone tincay keeps."""
    from ca.clock import UTC

    return value.replace(tzinfo=UTC) if value is not None else None
