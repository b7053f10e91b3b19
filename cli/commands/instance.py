"""Standing a deployment up: create a hierarchy (init), the SoftHSM demo (demo), and serve it
over HTTP (serve)."""
from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import click

from cli.commands.ocsp import preproducer
from cli.output import emit, emit_one, progress
from cli.params import WORKER_CLASSES, DurationType
from cli.shell import app_context, encode_certificates, json_option, write_output

DEMO_SPEC = Path(__file__).resolve().parents[2] / "profiles" / "hierarchies" / "demo.yaml"
"""The demo hierarchy (ca.settings.REPO_ROOT's, named here so --help needs no pydantic)."""


@click.command()
@click.option("--hierarchy", "spec_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Hierarchy spec (YAML), e.g. profiles/hierarchies/demo.yaml.")
@json_option
def init(spec_path: Path, as_json: bool) -> None:
    """Create the CAs and service units a hierarchy spec names (those not yet created)."""
    _init(spec_path, as_json)


def _init(spec_path: Path, as_json: bool) -> list[str]:
    from ca.hierarchy import load_hierarchy

    app = app_context(create_database=True)
    spec = load_hierarchy(spec_path, app.profiles)
    if spec.authorities:  # the token answers (and the PIN opens it) before anything is written
        app.keys.exists(spec.authorities[0].name)
    created = app.service.authorities.init_hierarchy(spec, progress=progress)
    app.service.audit_chain.ensure_key()  # signs the logs' checkpoints (tincay audit verify)
    # A new CA's CRL is served from the start: a hard-fail validator asking before the first
    # maintenance pass would otherwise get a 404 and reject the chain.
    crls = [app.service.publication.publish_crl(a.name) for a in spec.authorities
            if a.name in created]
    if as_json:
        emit_one({"hierarchy": spec.name, "created": created,
                  "crls": [{"ca": c.ca, "number": c.number} for c in crls],
                  "authorities": app.service.listings.list_authorities(),
                  "services": app.service.listings.list_service_units()}, True)
    else:
        click.echo(f"hierarchy {spec.name}: " + (f"created {', '.join(created)}" if created
                                                 else "nothing to create, all present")
                   + (f"; first CRL of {', '.join(c.ca for c in crls)} published" if crls
                      else ""))
    return created


@click.command()
@json_option
def demo(as_json: bool) -> None:
    """Set up the demo: a SoftHSM token under TINCAY_HOME and the demo hierarchy on it."""
    from ca.keys.softhsm import ensure_demo_token
    from ca.settings import Settings

    settings = Settings.from_env()
    progress(f"preparing SoftHSM token {settings.pkcs11_token!r} under {settings.home}")
    os.environ.update(ensure_demo_token(settings.home, settings.pkcs11_token, settings.pin_file,
                                        dict(os.environ)))
    _init(DEMO_SPEC, as_json)
    app = app_context()
    for authority in app.service.listings.list_authorities():
        if app.service.publication.latest_crl(authority["name"]) is None:
            app.service.publication.publish_crl(authority["name"])
    preproducer().refresh()
    from ca.files import private_dir

    public = private_dir(app.settings.home / "public")
    for authority in app.service.listings.list_authorities():
        cert = app.service.authorities.authority_certificate(authority["name"])
        write_output(str(public / f"{authority['name']}.pem"), encode_certificates([cert], "pem"))
    if not as_json:
        emit(app.service.listings.list_authorities(),
             ["name", "parent", "profile", "subject", "not_after"], False)
        emit(app.service.listings.list_service_units(),
             ["name", "kind", "authority", "serial", "not_after"], False)
        click.echo(f"CA certificates: {public}")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), help="Worker processes [CPU count].")
@click.option("--worker-class", type=click.Choice(WORKER_CLASSES), default=WORKER_CLASSES[0],
              show_default=True, help="gunicorn workers: requests on greenlets or threads.")
@click.option("--threads", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Threads per gthread worker.")
@click.option("--maintenance-interval", type=DurationType(), default="5m", show_default=True,
              help="How often the maintenance process publishes due CRLs and OCSP answers.")
@click.option("--no-maintenance", is_flag=True,
              help="Serve only (another host runs tincay maintain); with --tls-self the "
                   "maintenance process only renews that certificate.")
@click.option("--certfile", type=click.Path(dir_okay=False, path_type=Path),
              help="Serve HTTPS with this PEM certificate (then its CA chain).")
@click.option("--keyfile", type=click.Path(dir_okay=False, path_type=Path),
              help="The PEM private key of --certfile (readable by tincay's user only).")
@click.option("--tls-self", is_flag=True,
              help="Serve HTTPS with a tls-server certificate tincay issues itself for "
                   "TINCAY_PUBLIC_URL's host (kept under TINCAY_HOME/tls, renewed when due).")
@click.option("--tls-ca", help="The CA that issues the --tls-self certificate "
                               "[the one subordinate CA].")
@click.option("--tls-name", "tls_names", multiple=True,
              help="A DNS name the --tls-self certificate names (repeatable) "
                   "[TINCAY_PUBLIC_URL's host].")
@click.option("--client-ca", type=click.Path(dir_okay=False, path_type=Path),
              help="Ask TLS clients for a certificate issued under these PEM CA certificates "
                   "(API clients bound with `tincay client bind` log in with it) "
                   "[with --tls-self: tincay's own CAs; with --certfile: none asked].")
def serve(host: str, port: int, workers: int | None, worker_class: str, threads: int,
          maintenance_interval: timedelta, no_maintenance: bool, certfile: Path | None,
          keyfile: Path | None, tls_self: bool, tls_ca: str | None,
          tls_names: tuple[str, ...], client_ca: Path | None) -> None:
    """Serve OCSP, time-stamps, CRLs, CA certificates and the APIs under gunicorn, with a
    maintenance process that keeps CRLs and pre-produced OCSP answers fresh."""
    from ca.settings import service_variables
    from cli.http_limits import HttpLimits
    from cli.logs import configure
    from cli.serve import check_free
    from cli.serve import serve as run_server
    from cli.tls import ServingTls
    from tsa.config import tsa_settings

    ServingTls.check_options(certfile, keyfile, tls_self, tls_ca, tls_names, client_ca)
    configure()  # a bad TINCAY_LOG_* stops us first; from here on stderr is log lines
    limits = HttpLimits.from_env(os.environ)  # a bad TINCAY_HTTP_* stops us before anything
    service_variables(os.environ)  # and a bad TINCAY_KEY_CACHE or TINCAY_SAD_LIFETIME
    tsa_settings(os.environ)  # and a bad TINCAY_TSA_*, before a worker fails to boot on it
    app = app_context()
    app.engine  # migrate once, before the workers fork  # noqa: B018
    tls = ServingTls.set_up(app, host, certfile, keyfile, tls_self, tls_ca, tls_names,
                            client_ca)
    app.close()
    check_free(host, port)  # before saying we serve there
    scheme = "https" if tls.certfile else "http"
    progress(f"serving on {scheme}://{host}:{port} "
             f"(TINCAY_PUBLIC_URL={app.settings.public_url})")
    renewal = list(tls.renewal)
    if renewal and no_maintenance:  # the certificate is still renewed, nothing published
        renewal.append("--tls-only")
    run_server(host, port, workers, threads,
               maintenance=None if no_maintenance and not renewal else maintenance_interval,
               worker_class=worker_class, limits=limits,
               certfile=str(tls.certfile) if tls.certfile else None,
               keyfile=str(tls.keyfile) if tls.keyfile else None, maintenance_args=renewal,
               client_ca=str(tls.client_ca) if tls.client_ca else None,
               tsa_mark_file=str(app.settings.home / "tsa-gen-time.mark")
               if app.settings.home.is_dir() else None)
