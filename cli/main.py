"""The ``tincay`` command: a thin click shell over ca.services.

Exit codes: 0 success, 1 an operator error (one line on stderr, no traceback), 2 a usage error.
PINs are never options: they come from TINCAY_PKCS11_PIN or TINCAY_PKCS11_PIN_FILE.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from datetime import timedelta

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca.durations import format_duration
from ca.errors import TincayError
from ca.settings import REPO_ROOT
from cli.context import AppContext
from cli.output import emit, emit_one, progress
from cli.params import WORKER_CLASSES, DurationType

DEMO_SPEC = REPO_ROOT / "profiles" / "hierarchies" / "demo.yaml"
_FORMATS = click.Choice(["pem", "der"])


def _ctx() -> AppContext:
    """The invocation's AppContext, closed (HSM session, engine) when the command ends."""
    click_ctx = click.get_current_context()
    app = click_ctx.find_object(AppContext)
    if app is None:
        app = AppContext()
        click_ctx.obj = app
        click_ctx.call_on_close(app.close)
    return app


def _write(out: str, data: bytes) -> None:
    if out == "-":
        click.get_binary_stream("stdout").write(data)
        return
    path = Path(out)
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise click.FileError(out, exc.strerror) from None


def _encode(certs: Sequence[x509.Certificate], fmt: str) -> bytes:
    if fmt == "der":
        if len(certs) != 1:
            raise click.UsageError("DER holds one certificate: use --format pem for a chain")
        return certs[0].public_bytes(serialization.Encoding.DER)
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tincay")
def cli() -> None:
    """tincay: certification authority, OCSP responder and time-stamp authority.

    Settings come from the environment: TINCAY_HOME, TINCAY_DATABASE_URL, TINCAY_PKCS11_MODULE,
    TINCAY_PKCS11_TOKEN, TINCAY_PKCS11_PIN or TINCAY_PKCS11_PIN_FILE, TINCAY_PUBLIC_URL.
    """


# --- hierarchy ------------------------------------------------------------------------------

@cli.command()
@click.option("--hierarchy", "spec_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Hierarchy spec (YAML), e.g. profiles/hierarchies/demo.yaml.")
@json_option
def init(spec_path: Path, as_json: bool) -> None:
    """Create the CAs and service units a hierarchy spec names (those not yet created)."""
    _init(spec_path, as_json)


def _init(spec_path: Path, as_json: bool) -> list[str]:
    from ca.hierarchy import load_hierarchy

    app = _ctx()
    spec = load_hierarchy(spec_path, app.profiles)
    created = app.service.authorities.init_hierarchy(spec, progress=progress)
    if as_json:
        emit_one({"hierarchy": spec.name, "created": created,
                  "authorities": app.service.listings.list_authorities(),
                  "services": app.service.listings.list_service_units()}, True)
    else:
        click.echo(f"hierarchy {spec.name}: " + (f"created {', '.join(created)}" if created
                                                 else "nothing to create, all present"))
    return created


@cli.command()
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
    app = _ctx()
    for authority in app.service.listings.list_authorities():
        if app.service.publication.latest_crl(authority["name"]) is None:
            app.service.publication.publish_crl(authority["name"])
    _preproducer().refresh()
    public = app.settings.home / "public"
    public.mkdir(parents=True, exist_ok=True)
    for authority in app.service.listings.list_authorities():
        cert = app.service.authorities.authority_certificate(authority["name"])
        _write(str(public / f"{authority['name']}.pem"), _encode([cert], "pem"))
    if not as_json:
        emit(app.service.listings.list_authorities(), ["name", "parent", "profile", "subject",
                                              "not_after"], False)
        emit(app.service.listings.list_service_units(), ["name", "kind", "authority", "serial",
                                                "not_after"], False)
        click.echo(f"CA certificates: {public}")


@cli.command()
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
              help="Serve only (another host runs tincay maintain).")
def serve(host: str, port: int, workers: int | None, worker_class: str, threads: int,
          maintenance_interval: timedelta, no_maintenance: bool) -> None:
    """Serve OCSP, CRLs and CA certificates over HTTP under gunicorn, with a maintenance
    process that keeps CRLs and pre-produced OCSP answers fresh."""
    from cli.serve import serve as run_server

    app = _ctx()
    app.engine  # migrate once, before the workers fork  # noqa: B018
    app.close()
    progress(f"serving on http://{host}:{port} (TINCAY_PUBLIC_URL={app.settings.public_url})")
    run_server(host, port, workers, threads,
               maintenance=None if no_maintenance else maintenance_interval,
               worker_class=worker_class)


# --- CAs ------------------------------------------------------------------------------------

@cli.group(name="ca")
def ca_group() -> None:
    """Certification authorities."""


@ca_group.command(name="list")
@json_option
def ca_list(as_json: bool) -> None:
    """List the CAs."""
    emit(_ctx().service.listings.list_authorities(),
         ["name", "status", "parent", "profile", "subject", "not_after"], as_json)


@ca_group.command(name="show")
@click.argument("name")
@json_option
def ca_show(name: str, as_json: bool) -> None:
    """Show one CA."""
    emit_one(_ctx().service.listings.show_authority(name), as_json)


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
    emit_one(_ctx().service.publication.configure(
        name, crl_validity=crl_validity, ocsp_validity=ocsp_validity,
        delta_crl_validity=False if delta_crl_validity is None
        else None if delta_crl_validity == "off" else delta_crl_validity),
        as_json)


@ca_group.command(name="export")
@click.argument("name")
@click.option("--chain", is_flag=True, help="Include the parents up to the root (PEM only).")
@click.option("--format", "fmt", type=_FORMATS, default="pem", show_default=True)
@click.option("--out", default="-", show_default=True, help="Output file, - for stdout.")
def ca_export(name: str, chain: bool, fmt: str, out: str) -> None:
    """Export a CA certificate (or its chain)."""
    service = _ctx().service
    certs = service.authorities.chain(name) if chain else [service.authorities.authority_certificate(name)]
    _write(out, _encode(certs, fmt))


# --- issuance -------------------------------------------------------------------------------

@cli.command()
@click.option("--ca", "ca_name", required=True, help="The issuing CA.")
@click.option("--profile", "profile_name", required=True, help="Certificate profile.")
@click.option("--subject", required=True,
              help="Subject, e.g. 'CN=Nguyễn Văn A,UID=CCCD:012345678901,C=VN'.")
@click.option("--csr", "csr_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PKCS#10 request (PEM or DER); only its public key is used.")
@click.option("--generate-key", is_flag=True,
              help="Generate the subscriber's key on the HSM (it never leaves it).")
@click.option("--key-type", help="With --generate-key: rsa-2048, ec-p256, ... "
                                 "(default: the profile's first).")
@click.option("--email", "emails", multiple=True, help="rfc822Name SAN (repeatable).")
@click.option("--dns", "dns_names", multiple=True, help="dNSName SAN (repeatable).")
@click.option("--days", type=click.IntRange(min=1), help="Validity in days (profile default).")
@click.option("--out", required=True, help="Where to write the certificate (PEM), - for stdout.")
@json_option
def issue(ca_name: str, profile_name: str, subject: str, csr_file: Path | None,
          generate_key: bool, key_type: str | None, emails: tuple[str, ...],
          dns_names: tuple[str, ...], days: int | None, out: str, as_json: bool) -> None:
    """Issue a certificate from a profile, for a CSR or a key generated on the HSM."""
    from ca import issuance
    from ca.errors import CSRError
    from ca.keys.base import KeySpec
    from ca.services import KeySource
    from ca.subject import parse_subject

    if (csr_file is None) == (not generate_key):
        raise click.UsageError("give exactly one of --csr FILE and --generate-key")
    if key_type and not generate_key:
        raise click.UsageError("--key-type goes with --generate-key")
    app = _ctx()
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
        source = KeySource(generate=spec)
    issued = app.service.issuance.issue(ca_name, profile_name, parse_subject(subject), source,
                               emails=emails, dns_names=dns_names, days=days, progress=progress)
    _write(out, issued.pem)
    _preproduce(ca_name, issued.serial_hex)
    record = app.service.listings.show_certificate(issued.serial_hex, ca_name)
    if as_json:
        emit_one(record, True)
    elif out != "-":
        click.echo(f"issued {issued.profile} certificate {issued.serial_hex} under {ca_name} "
                   f"-> {out}" + (f" (key {issued.key_uri})" if issued.key_uri else ""))


# --- revocation -----------------------------------------------------------------------------

def _aware(value: Any) -> Any:
    """click.DateTime gives naive values: read them as UTC, the only zone tincay keeps."""
    from ca.clock import UTC

    return value.replace(tzinfo=UTC) if value is not None else None


@cli.command()
@click.argument("serial")
@click.option("--ca", "ca_name", required=True, help="The CA that issued the certificate.")
@click.option("--reason", required=True,
              help="RFC 5280 reason: unspecified, keyCompromise, cACompromise, "
                   "affiliationChanged, superseded, cessationOfOperation, certificateHold, "
                   "privilegeWithdrawn, aACompromise.")
@click.option("--invalidity-date", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="When the key is known or suspected to have been compromised (UTC).")
@json_option
def revoke(serial: str, ca_name: str, reason: str, invalidity_date: Any, as_json: bool) -> None:
    """Revoke a certificate (SERIAL in hex as `openssl x509 -serial` prints it)."""
    record = _ctx().service.revocation.revoke(ca_name, serial, reason,
                                   invalidity_date=_aware(invalidity_date))
    _preproduce(ca_name, record["serial"])
    if as_json:
        emit_one(record, True)
    else:
        click.echo(f"revoked {record['serial']} of {ca_name}: {record['revocation_reason']} "
                   f"at {record['revoked_at'].isoformat()}")


@cli.command()
@click.argument("serial")
@click.option("--ca", "ca_name", required=True, help="The CA that issued the certificate.")
def release(serial: str, ca_name: str) -> None:
    """Release a certificate from certificateHold: it is valid again."""
    record = _ctx().service.revocation.release_hold(ca_name, serial)
    _preproduce(ca_name, record["serial"])
    click.echo(f"released {record['serial']} of {ca_name} from hold")


@cli.command(name="crl")
@click.option("--ca", "ca_name", required=True, help="The CA whose CRL to publish.")
@click.option("--delta", is_flag=True,
              help="A delta CRL over the latest complete CRL (served at /crl/<ca>-delta.crl).")
@click.option("--out", default=None, help="Also write the CRL here (- for stdout).")
@click.option("--format", "fmt", type=_FORMATS, default="der", show_default=True)
@click.option("--validity", type=DurationType(),
              help="nextUpdate - thisUpdate, e.g. 7d or 12h [the CA's setting].")
@json_option
def crl_command(ca_name: str, delta: bool, out: str | None, fmt: str,
                validity: timedelta | None, as_json: bool) -> None:
    """Publish a new CRL of a CA (served at /crl/<ca>.crl, deltas at /crl/<ca>-delta.crl)."""
    info = _ctx().service.publication.publish_crl(ca_name, validity=validity, delta=delta)
    if out is not None:
        data = info.der if fmt == "der" else x509.load_der_x509_crl(info.der).public_bytes(
            serialization.Encoding.PEM)
        _write(out, data)
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


# --- certificates ---------------------------------------------------------------------------

@cli.group(name="cert")
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
    rows = _ctx().service.listings.list_certificates(ca=ca_name, profile=profile, status=status,
                                            subject_contains=subject_contains, limit=limit)
    emit(rows, ["issuer", "serial", "status", "profile", "subject", "not_after"], as_json)


@cert_group.command(name="show")
@click.argument("serial")
@click.option("--ca", "ca_name", help="The issuing CA (needed only if the serial is ambiguous).")
@json_option
def cert_show(serial: str, ca_name: str | None, as_json: bool) -> None:
    """Show a certificate by serial (hex, as `openssl x509 -serial` prints it)."""
    emit_one(_ctx().service.listings.show_certificate(serial, ca_name), as_json)


@cert_group.command(name="export")
@click.argument("serial")
@click.option("--ca", "ca_name", help="The issuing CA (needed only if the serial is ambiguous).")
@click.option("--format", "fmt", type=_FORMATS, default="pem", show_default=True)
@click.option("--out", default="-", show_default=True, help="Output file, - for stdout.")
def cert_export(serial: str, ca_name: str | None, fmt: str, out: str) -> None:
    """Export a certificate."""
    der = _ctx().service.listings.certificate_der(serial, ca_name)
    _write(out, _encode([x509.load_der_x509_certificate(der)], fmt))


# --- audit ----------------------------------------------------------------------------------

@cli.command()
@click.option("--ca", "ca_name", help="Only events of this CA.")
@click.option("--serial", help="Only events of this serial.")
@click.option("--limit", type=click.IntRange(1, 100000), default=50, show_default=True)
@json_option
def audit(ca_name: str | None, serial: str | None, limit: int, as_json: bool) -> None:
    """The audit log (key generations, issuance), newest first."""
    emit(_ctx().service.listings.list_events(ca=ca_name, serial=serial, limit=limit),
         ["at", "action", "authority", "serial", "subject"], as_json)


# --- OCSP ---------------------------------------------------------------------------------

def _preproducer() -> Any:
    from ocsp.preproduce import PreProducer
    from ocsp.responder import Responder
    from ocsp.sources import StoreSource, responder_keys

    service = _ctx().service
    source = StoreSource(service.revocation, service.ocsp_answers)
    return PreProducer(service.ocsp_answers,
                       Responder(responder_keys(service), source, service.clock))


def _preproduce(ca: str, serial: str) -> None:
    """Issuance and revocation refresh that serial's stored OCSP answer at once."""
    _preproducer().refresh(ca, serial)


@cli.command()
@click.option("--once", is_flag=True, help="One pass, then exit (for cron).")
@click.option("--interval", type=DurationType(), default="5m", show_default=True,
              help="Time between passes.")
@json_option
def maintain(once: bool, interval: timedelta, as_json: bool) -> None:
    """Publish the CRLs and sign the OCSP answers that are due (tincay serve runs this)."""
    import logging
    import signal
    import threading

    from cli.maintenance import run_forever, run_once

    def one_pass() -> Any:
        return run_once(_ctx().service.publication, _preproducer().refresh)

    if once:
        report = one_pass()
        emit_one(report.as_dict(), True) if as_json else click.echo(report.summary())
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    progress(f"maintenance every {format_duration(interval)} (Ctrl-C to stop)")
    run_forever(one_pass, interval, stop)


@cli.group(name="testing")
def testing_group() -> None:
    """Throwaway hierarchies for test suites in any language."""


@testing_group.command(name="serve")
@click.option("--spec", "spec_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Hierarchy spec (YAML) [profiles/hierarchies/demo.yaml].")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Loopback port (0: any free one; the JSON says which).")
@click.option("--issue", "issues", multiple=True, metavar="PROFILE:SUBJECT",
              help="Also issue this (repeatable), e.g. 'clinician:C=VN, O=BV, CN=A, "
                   "UID=CCCD:079073009568'; key and PKCS#12 in the export folder.")
@click.option("--export", "export_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write certificates and keys [a new temporary folder].")
def testing_serve(spec_path: Path | None, port: int, issues: tuple[str, ...],
                  export_dir: Path | None) -> None:
    """Serve a throwaway hierarchy (in-memory keys and database) on loopback: OCSP, TSA, CRLs
    and CA certificates. Prints one JSON line with the URLs and the export folder, then serves
    until interrupted. The clock follows real time."""
    import json
    import signal
    import tempfile
    import threading

    from ca.clock import SystemClock
    from ca.testing import DEMO_SPEC, Hierarchy

    with Hierarchy.from_spec(spec_path or DEMO_SPEC, port=port) as pki:
        issued = []
        for item in issues:
            profile, _, subject = item.partition(":")
            if not subject:
                raise click.BadParameter(f"{item!r} is not PROFILE:SUBJECT", param_hint="--issue")
            issued.append(pki.issue(profile.strip(), subject.strip()))
        folder = pki.export(export_dir or tempfile.mkdtemp(prefix="tincay-testing-"))
        for authority in pki.spec.authorities:
            pki.service.publication.publish_crl(authority.name)
        base = pki.url
        click.echo(json.dumps({
            "url": base, "ocsp": f"{base}/ocsp", "tsa": f"{base}/tsa", "export": str(folder),
            "password": "tincay",
            "authorities": {a.name: {"certificate": f"{base}/certs/{a.name}.cer",
                                     "crl": f"{base}/crl/{a.name}.crl",
                                     "pem": str(folder / f"{a.name}.pem")}
                            for a in pki.spec.authorities},
            "issued": [{"profile": i.profile, "serial": i.serial_hex, "ca": i.ca,
                        "certificate": str(folder / f"{i.serial_hex}.pem"),
                        "chain": str(folder / f"{i.serial_hex}-chain.pem"),
                        "key": str(folder / f"{i.serial_hex}-key.pem"),
                        "pkcs12": str(folder / f"{i.serial_hex}.p12")} for i in issued],
        }), nl=True)
        sys.stdout.flush()
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        with pki.serve():
            while not stop.is_set():
                pki.clock.set(SystemClock().now())
                stop.wait(1)


@cli.group(name="ocsp")
def ocsp_group() -> None:
    """The OCSP responder's pre-produced responses."""


@ocsp_group.command(name="refresh")
@click.option("--ca", "ca_name", help="Only this CA (default: every CA served).")
@json_option
def ocsp_refresh(ca_name: str | None, as_json: bool) -> None:
    """Sign the responses that are missing, stale or due (run it from cron: hourly is ample)."""
    count = _preproducer().refresh(ca_name)
    if as_json:
        emit_one({"refreshed": count}, True)
    else:
        click.echo(f"{count} OCSP responses signed")


# --- time-stamp authority ------------------------------------------------------------------

@cli.group(name="tsa")
def tsa_group() -> None:
    """The time-stamp authority."""


@tsa_group.command(name="log")
@click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="Only tokens granted at or after this time (UTC).")
@click.option("--serial", help="Only the token with this serial (hex).")
@click.option("--unit", help="Only this TSA unit's tokens.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
@json_option
def tsa_log(since: Any, serial: str | None, unit: str | None, limit: int,
            as_json: bool) -> None:
    """Granted time-stamp tokens, newest first."""
    rows = _ctx().service.token_log.find(unit=unit, since=_aware(since), serial=serial,
                                        limit=limit)
    emit(rows, ["gen_time", "unit", "serial", "imprint_algorithm", "policy", "requester"],
         as_json)


# --- profiles -------------------------------------------------------------------------------

@cli.group(name="profiles")
def profiles_group() -> None:
    """Certificate profiles (profiles/*.yaml)."""


@profiles_group.command(name="list")
@json_option
def profiles_list(as_json: bool) -> None:
    """List the profiles an operator can issue from."""
    rows = [{"name": p.name, "description": p.description, "extends": p.extends,
             "keys": [str(k) for k in p.key_algorithms], "max_days": p.validity.max_days}
            for p in _ctx().profiles]
    emit(rows, ["name", "extends", "max_days", "description"], as_json)


@profiles_group.command(name="show")
@click.argument("name")
@json_option
def profiles_show(name: str, as_json: bool) -> None:
    """Show a resolved profile (inheritance applied) as YAML, or JSON."""
    import yaml

    from ca.profiles import profile_as_dict

    data = profile_as_dict(_ctx().profiles.get(name, allow_abstract=True))
    if as_json:
        emit_one(data, True)
    else:
        click.echo(yaml.safe_dump(data, allow_unicode=True, sort_keys=False).rstrip())


@profiles_group.command(name="check")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def profiles_check(path: Path) -> None:
    """Validate a profile file against the installed profiles (for its extends:)."""
    from ca.profiles import check_profile_file

    profile = check_profile_file(path, _ctx().profiles)
    click.echo(f"{path}: profile {profile.name} is valid")


# --- entry point ----------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; operator errors become one line on stderr and exit 1."""
    return run(cli, argv)


def run(command: Callable[..., Any], argv: Sequence[str] | None = None) -> int:
    try:
        command.main(args=list(argv) if argv is not None else None, prog_name="tincay",
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
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
