"""``tincay testing serve``: a throwaway hierarchy (in-memory keys and database) on loopback,
for test suites in any language."""
from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group(name="testing")
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
    import shutil
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
        if export_dir is None:  # private keys in a folder of our own: gone when we stop
            click.get_current_context().call_on_close(
                lambda: shutil.rmtree(folder, ignore_errors=True))
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
