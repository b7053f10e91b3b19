"""The ``tincay`` command: a thin click shell over ca.services.

This module holds only the root group, the entry point and the registration of the command
groups (cli/commands/, one module each); a service that brings commands adds one module there
and one ``cli.add_command`` line here.

Exit codes: 0 success, 1 an operator error (one line on stderr, no traceback), 2 a usage error,
3 ``tincay reconcile`` found something to resolve, 4 ``tincay audit verify`` found a
record changed, inserted, deleted or reordered.
PINs are never options: they come from TINCAY_PKCS11_PIN or TINCAY_PKCS11_PIN_FILE.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

import click

from ca.errors import TincayError
from cli.commands import (audit, authorities, certificates, clients, credentials, instance,
                          ocsp, profiles, reconciliation, revocation, testing, tsa)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tincay")
def cli() -> None:
    """tincay: certification authority, OCSP responder and time-stamp authority.

    Settings come from the environment: TINCAY_HOME, TINCAY_DATABASE_URL, TINCAY_PKCS11_MODULE,
    TINCAY_PKCS11_TOKEN, TINCAY_PKCS11_PIN or TINCAY_PKCS11_PIN_FILE, TINCAY_PUBLIC_URL.
    """


cli.add_command(instance.init)
cli.add_command(instance.demo)
cli.add_command(instance.serve)
cli.add_command(authorities.ca_group)
cli.add_command(certificates.issue)
cli.add_command(certificates.cert_group)
cli.add_command(audit.audit)
cli.add_command(revocation.revoke)
cli.add_command(revocation.release)
cli.add_command(revocation.crl_command)
cli.add_command(reconciliation.reconcile)
cli.add_command(ocsp.ocsp_group)
cli.add_command(ocsp.maintain)
cli.add_command(tsa.tsa_group)
cli.add_command(clients.client_group)
cli.add_command(profiles.profiles_group)
cli.add_command(testing.testing_group)
cli.add_command(credentials.credential_group)
cli.add_command(credentials.csc_group)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; operator errors become one line on stderr and exit 1."""
    return run(cli, argv)


def run(command: Callable[..., Any], argv: Sequence[str] | None = None) -> int:
    try:
        result = command.main(args=list(argv) if argv is not None else None, prog_name="tincay",
                              standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("tincay: aborted", err=True)
        return 1
    except TincayError as exc:
        click.echo(f"tincay: error: {exc}", err=True)
        return 1
    # a command's click.exceptions.Exit(code) comes back as click's return value
    return result if type(result) is int else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
