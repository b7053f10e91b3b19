"""Keeping OCSP answers fresh: ``tincay ocsp refresh``, ``tincay maintain`` (CRLs and OCSP
answers on a timer), and the pre-producer that issuance, revocation and the demo refresh a
serial's stored answer with."""
from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click

from ca.durations import format_duration
from cli.output import emit_one, progress
from cli.params import DurationType
from cli.shell import app_context, json_option

if TYPE_CHECKING:
    from ocsp.preproduce import PreProducer


def preproducer() -> PreProducer:
    """A pre-producer over the invocation's store, signing with the CAs' OCSP responder keys."""
    from ocsp.preproduce import PreProducer
    from ocsp.responder import Responder
    from ocsp.sources import StoreSource, responder_keys

    service = app_context().service
    source = StoreSource(service.revocation, service.ocsp_answers)
    return PreProducer(service.ocsp_answers,
                       Responder(responder_keys(service), source, service.clock))


def preproduce(ca: str, serial: str) -> None:
    """Issuance and revocation refresh that serial's stored OCSP answer at once."""
    preproducer().refresh(ca, serial)


@click.group(name="ocsp")
def ocsp_group() -> None:
    """The OCSP responder's pre-produced responses."""


@ocsp_group.command(name="refresh")
@click.option("--ca", "ca_name", help="Only this CA (default: every CA served).")
@json_option
def ocsp_refresh(ca_name: str | None, as_json: bool) -> None:
    """Sign the responses that are missing, stale or due (run it from cron: hourly is ample)."""
    count = preproducer().refresh(ca_name)
    if as_json:
        emit_one({"refreshed": count}, True)
    else:
        click.echo(f"{count} OCSP responses signed")


def renew_units(app: Any) -> list[str]:
    """Renew the service units that are due, then destroy the keys of earlier renewals that
    no worker signs with any more; the names renewed."""
    renewed = [u["name"] for u in app.service.renewal.renew_due(app.settings.unit_renewal)]
    app.service.renewal.retire_old_keys()
    return renewed


def renew_tls(app: Any, ca: str, names: tuple[str, ...], reload_pid: int | None) -> list[str]:
    """The --tls-self certificate renewed when due (cli.tls.self_issued: past two thirds of
    its validity, or no longer for these names or this CA); then SIGHUP to the server's
    arbiter, whose new workers load the new pair while the old ones finish their
    connections. Lets `tincay serve --tls-self` run for years without a restart."""
    import os
    import signal

    from cli.tls import self_issued

    pair = self_issued(app.service, app.settings.home, list(names), ca)
    if not pair.issued:
        return []
    if reload_pid is not None:
        os.kill(reload_pid, signal.SIGHUP)
    return [f"TLS certificate for {', '.join(names)} (until {pair.not_after:%Y-%m-%d})"]


@click.command()
@click.option("--once", is_flag=True, help="One pass, then exit (for cron).")
@click.option("--interval", type=DurationType(), default="5m", show_default=True,
              help="Time between passes.")
@click.option("--tls-ca", help="Renew the `tincay serve --tls-self` certificate from this CA "
                               "when it is due (with --tls-name).")
@click.option("--tls-name", "tls_names", multiple=True,
              help="A DNS name that certificate names (repeatable).")
@click.option("--reload-pid", type=int,
              help="After renewing it, send SIGHUP to this gunicorn arbiter (tincay serve "
                   "passes its own) so that new workers serve the new certificate.")
@click.option("--tls-only", is_flag=True,
              help="Only renew that certificate: publish nothing (tincay serve "
                   "--no-maintenance --tls-self runs this).")
@json_option
def maintain(once: bool, interval: timedelta, tls_ca: str | None, tls_names: tuple[str, ...],
             reload_pid: int | None, tls_only: bool, as_json: bool) -> None:
    """Publish the CRLs and sign the OCSP answers that are due (tincay serve runs this)."""
    import signal
    import threading

    from cli.maintenance import MaintenanceReport, run_forever, run_once

    if bool(tls_ca) != bool(tls_names) or (tls_only and not tls_ca):
        raise click.UsageError("--tls-ca and --tls-name go together (and with --tls-only)")

    def renew(app: Any) -> list[str]:
        renewed = renew_units(app)
        if tls_ca:
            renewed += renew_tls(app, tls_ca, tls_names, reload_pid)
        return renewed

    def one_pass() -> Any:
        app = app_context()
        if tls_only:
            assert tls_ca is not None
            return MaintenanceReport(renewed=renew_tls(app, tls_ca, tls_names, reload_pid),
                                     publishes=False)
        return run_once(app.service.publication,
                        lambda: preproducer().refresh(),  # built after the renewals
                        lambda: app.service.listings.expiring_authorities(
                            app.settings.ca_expiry_warning),
                        lambda: renew(app), app.service.audit_chain.checkpoint)

    if once:
        report = one_pass()
        emit_one(report.as_dict(), True) if as_json else click.echo(report.summary())
        for warning in report.warnings:
            click.echo(f"tincay: warning: {warning}", err=True)
        return
    from cli.logs import configure

    configure()  # TINCAY_LOG_FORMAT, TINCAY_LOG_LEVEL (cli/logs.py)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    progress(f"maintenance every {format_duration(interval)} (Ctrl-C to stop)")
    run_forever(one_pass, interval, stop)
