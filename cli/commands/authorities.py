"""``tincay ca``: list, show, configure and export the certification authorities."""
from __future__ import annotations

from datetime import timedelta

import click

from cli.output import emit, emit_one
from cli.params import DurationType
from cli.shell import FORMATS, app_context, encode_certificates, json_option, write_output


@click.group(name="ca")
def ca_group() -> None:
    """Certification authorities."""


@ca_group.command(name="list")
@json_option
def ca_list(as_json: bool) -> None:
    """List the CAs."""
    app = app_context()
    emit(app.service.listings.list_authorities(),
         ["name", "status", "parent", "profile", "subject", "not_after"], as_json)
    for warning in app.service.listings.expiring_authorities(app.settings.ca_expiry_warning):
        click.echo(f"tincay: warning: {warning}", err=True)


@ca_group.command(name="show")
@click.argument("name")
@json_option
def ca_show(name: str, as_json: bool) -> None:
    """Show one CA."""
    emit_one(app_context().service.listings.show_authority(name), as_json)


@ca_group.command(name="configure")
@click.argument("name")
@click.option("--crl-validity", type=DurationType(), help="Complete CRLs valid this long (7d).")
@click.option("--delta-crl-validity", type=DurationType(allow_off=True),
              help="Publish delta CRLs valid this long (1d), or 'off'.")
@click.option("--ocsp-validity", type=DurationType(), help="OCSP answers valid this long (12h).")
@json_option
def ca_configure(name: str, crl_validity: timedelta | None,
                 delta_crl_validity: timedelta | None | str, ocsp_validity: timedelta | None,
                 as_json: bool) -> None:
    """Set how long a CA's CRLs, delta CRLs and OCSP answers are valid."""
    emit_one(app_context().service.publication.configure(
        name, crl_validity=crl_validity, ocsp_validity=ocsp_validity,
        delta_crl_validity=False if delta_crl_validity is None
        else None if delta_crl_validity == "off" else delta_crl_validity),
        as_json)


@ca_group.command(name="export")
@click.argument("name")
@click.option("--chain", is_flag=True, help="Include the parents up to the root (PEM only).")
@click.option("--format", "fmt", type=FORMATS, default="pem", show_default=True)
@click.option("--out", default="-", show_default=True, help="Output file, - for stdout.")
def ca_export(name: str, chain: bool, fmt: str, out: str) -> None:
    """Export a CA certificate (or its chain)."""
    authorities = app_context().service.authorities
    certs = authorities.chain(name) if chain else [authorities.authority_certificate(name)]
    write_output(out, encode_certificates(certs, fmt))
