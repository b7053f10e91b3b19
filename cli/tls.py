"""`tincay serve --tls-self`: tincay's own TLS server certificate, issued by one of its CAs
from the ``tls-server`` profile, for the host of TINCAY_PUBLIC_URL (or the ``--tls-name``
names: the URLs certificates carry for OCSP and CRLs are best left http://, served by a
second, plain `tincay serve`).

The TLS key is a software key (EC P-256, made by cryptography) in a file under
TINCAY_HOME/tls, readable only by tincay's user: gunicorn and OpenSSL's TLS servers load a
private key from a file, and a PKCS#11 key cannot be one (that would need an OpenSSL engine or
provider for the token in every worker). The CA and signing keys stay on the HSM; this key only
protects the transport, as TLS server keys commonly do, and is replaced with each renewal.

The certificate and key are reused while they match (same host names, same issuer, the key
belongs to the certificate) and more than a third of the certificate's validity is left; past
that, ``tincay serve`` issues a new pair before it starts (the old one stays valid until it
ends), and its maintenance process (`tincay maintain --tls-ca --tls-name`) renews the pair
while the server runs, then SIGHUPs the arbiter so new workers serve it.

With --tls-self, TLS clients are also asked for a certificate issued by one of tincay's own
CAs (the bundle :func:`own_ca_bundle` writes beside the server's pair), so an API client
holding a ``tls-client`` certificate bound to it (`tincay client bind`) logs in with it;
``--client-ca PEM`` names another bundle, with --tls-self or --certfile.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ca.errors import ConfigurationError
from ca.files import PRIVATE_FILE, private_dir

PROFILE = "tls-server"


@dataclass(frozen=True)
class ServingTls:
    """What `tincay serve` serves TLS with: the pair gunicorn loads (none: plain HTTP), the
    CA bundle client certificates are asked under (none: not asked), and the arguments its
    maintenance process renews a --tls-self pair with while serving."""

    certfile: Path | None
    keyfile: Path | None
    client_ca: Path | None
    renewal: tuple[str, ...] = ()

    @staticmethod
    def check_options(certfile: Path | None, keyfile: Path | None, tls_self: bool,
                      tls_ca: str | None, tls_names: Sequence[str],
                      client_ca: Path | None) -> None:
        """The serve options that go together, before anything starts (click.UsageError)."""
        import click

        if tls_self and (certfile or keyfile):
            raise click.UsageError("give either --tls-self or --certfile and --keyfile")
        if (certfile is None) != (keyfile is None):
            raise click.UsageError("--certfile and --keyfile go together")
        if (tls_ca or tls_names) and not tls_self:
            raise click.UsageError("--tls-ca and --tls-name go with --tls-self")
        if client_ca is not None and not (tls_self or certfile):
            raise click.UsageError("--client-ca needs TLS: --certfile and --keyfile, or "
                                   "--tls-self")

    @classmethod
    def set_up(cls, app: Any, host: str, certfile: Path | None, keyfile: Path | None,
               tls_self: bool, tls_ca: str | None, tls_names: Sequence[str],
               client_ca: Path | None) -> "ServingTls":
        """Check a given pair and client CA bundle (ConfigurationError naming the file), or
        issue/reuse the --tls-self pair, whose client CA bundle defaults to tincay's own CAs."""
        from cli.output import progress

        if certfile is not None and keyfile is not None:
            check_pair(certfile, keyfile)
        if client_ca is not None:
            check_client_ca(client_ca)
        renewal: tuple[str, ...] = ()
        if tls_self:
            hosts = [n.lower() for n in tls_names] or tls_hosts(app.settings.public_url, host)
            ca = issuing_ca(app.service.listings, tls_ca)
            pair = self_issued(app.service, app.settings.home, hosts, ca)
            what = "issued" if pair.issued else "reusing"
            progress(f"TLS: {what} a {ca} certificate for {', '.join(hosts)} until "
                     f"{pair.not_after:%Y-%m-%d} ({pair.certfile})")
            certfile, keyfile = pair.certfile, pair.keyfile
            renewal = ("--tls-ca", ca, *(arg for name in hosts for arg in ("--tls-name", name)))
            if client_ca is None:
                client_ca = own_ca_bundle(app.service, app.settings.home)
        if client_ca is not None:
            progress(f"TLS: asking clients for a certificate under {client_ca}")
        return cls(certfile, keyfile, client_ca, renewal)


@dataclass(frozen=True)
class ServerCertificate:
    """The files gunicorn loads (certfile: the certificate then its CA chain, root excluded;
    keyfile: the private key, 0600) and whether this start issued them."""

    certfile: Path
    keyfile: Path
    issued: bool
    not_after: datetime


def tls_hosts(public_url: str, bind_host: str) -> list[str]:
    """The DNS names the certificate names: TINCAY_PUBLIC_URL's host, and the bind address if
    it is a name too. IP addresses and single labels (localhost) are left out: the
    tls-server profile certifies fully qualified DNS names only."""
    names: list[str] = []
    for host in (urlsplit(public_url).hostname or "", bind_host):
        if "." in host.strip(".") and not _is_ip(host) and host.lower() not in names:
            names.append(host.lower())
    if not names:
        raise ConfigurationError(
            f"--tls-self needs a DNS name to certify: TINCAY_PUBLIC_URL is {public_url} and "
            f"--host {bind_host}; name the host with --tls-name")
    return names


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def issuing_ca(listings: Any, name: str | None) -> str:
    """``name``, or the instance's one subordinate CA (a root should not sign TLS servers)."""
    if name is not None:
        return name
    candidates = [a["name"] for a in listings.list_authorities()
                  if a["parent"] is not None and a["status"] == "active"]
    if len(candidates) != 1:
        raise ConfigurationError("--tls-self: name the CA that issues the TLS certificate with "
                                 f"--tls-ca (subordinate CAs: {', '.join(candidates) or 'none'})")
    return candidates[0]


def self_issued(service: Any, home: Path, hosts: Sequence[str], ca: str) -> ServerCertificate:
    """The current certificate and key under ``home``/tls, issued anew if missing, for other
    hosts or another CA, or past two thirds of its validity."""
    folder = private_dir(home / "tls")
    certfile, keyfile = folder / "server.pem", folder / "server.key"
    full = service.authorities.chain(ca)
    chain = full[:-1] or full  # the issuing CA up to, not including, the root
    now = service.clock.now()
    current = _current(certfile, keyfile, hosts, full[0], now)
    if current is not None:
        return ServerCertificate(certfile, keyfile, False, current.not_valid_after_utc)

    from ca.services.results import KeySource

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
           .sign(key, hashes.SHA256()))
    issued = service.issuance.issue(ca, PROFILE, [("CN", hosts[0])], KeySource(csr=csr),
                                    dns_names=list(hosts))
    pem = serialization.Encoding.PEM
    _replace(keyfile, key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    _replace(certfile, b"".join(c.public_bytes(pem) for c in [issued.certificate, *chain]))
    return ServerCertificate(certfile, keyfile, True, issued.certificate.not_valid_after_utc)


def _current(certfile: Path, keyfile: Path, hosts: Sequence[str], issuer: x509.Certificate,
             now: datetime) -> x509.Certificate | None:
    """The stored certificate if it is still the one to serve, else None."""
    try:
        cert = x509.load_pem_x509_certificates(certfile.read_bytes())[0]
        key = serialization.load_pem_private_key(keyfile.read_bytes(), None)
        names = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except (OSError, ValueError, IndexError, x509.ExtensionNotFound):
        return None
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if (key.public_key() != cert.public_key() or sorted(names) != sorted(hosts)
            or cert.issuer != issuer.subject or not start <= now < end
            or end - now < (end - start) / 3):
        return None
    return cert


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` 0600 beside ``path``, then rename it over ``path`` (atomic: a worker
    starting meanwhile reads the old pair or the new one, never half a file)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def check_pair(certfile: Path, keyfile: Path) -> None:
    """ConfigurationError unless OpenSSL loads the pair (before gunicorn's workers try)."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot serve TLS with {certfile} and {keyfile}: "
                                 f"{getattr(exc, 'strerror', None) or exc}") from None


def own_ca_bundle(service: Any, home: Path) -> Path:
    """``home``/tls/client-ca.pem: the certificates of every active tincay CA, the bundle
    `tincay serve --tls-self` verifies TLS client certificates against when no --client-ca
    names another (rewritten at each start, so a new CA is trusted from its next start)."""
    certificates = [service.authorities.authority_certificate(a["name"])
                    for a in service.listings.list_authorities() if a["status"] == "active"]
    path = private_dir(home / "tls") / "client-ca.pem"
    _replace(path, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates))
    return path


def check_client_ca(path: Path) -> None:
    """ConfigurationError unless OpenSSL loads at least one CA certificate from ``path``."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"--client-ca {path}: no CA certificate OpenSSL can load "
                                 f"({getattr(exc, 'strerror', None) or exc})") from None
    if not context.get_ca_certs():
        raise ConfigurationError(f"--client-ca {path}: no CA certificate in it")
