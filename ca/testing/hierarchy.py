"""Throwaway hierarchies for test suites, from the same specs and profiles production uses.

    from ca.testing import Hierarchy

    with Hierarchy.from_spec() as pki:              # the demo spec, in-memory keys and database
        doctor = pki.issue("clinician", "C=VN, O=Bệnh viện Quận 11, CN=Nguyễn Văn A, "
                                        "UID=CCCD:079073009568")
        doctor.private_key.sign(...)                # a real key: sign whatever the suite tests
        pki.revoke(doctor)
        pki.export(tmp_path)                        # PEM, DER and PKCS#12 for other languages

Everything goes through :class:`ca.services.CertificateAuthority`, so a throwaway
certificate is built, persisted and audited exactly like a production one. The clock is a
:class:`FrozenClock` the suite controls (``pki.clock.set(...)``, ``with pki.at(when):``) to make
expired and not-yet-valid certificates.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import socket
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from sqlalchemy.engine import make_url

from ca.clock import FrozenClock, SystemClock, ensure_utc
from ca.errors import ConfigurationError, KeyBackendError
from ca.hierarchy import HierarchySpec, load_hierarchy
from ca.keys.base import KeyBackend, KeySpec, PrivateKey
from ca.keys.memory import MemoryBackend
from ca.profiles import ProfileSet, load_profiles
from ca.services import CertificateAuthority, CrlInfo, KeySource
from ca.settings import REPO_ROOT
from ca.store.db import (create_engine_for, create_throwaway_schema, make_session_factory,
                         migrate)
from ca.subject import parse_subject

DEMO_SPEC = REPO_ROOT / "profiles" / "hierarchies" / "demo.yaml"
PKCS12_PASSWORD = b"tincay"  # throwaway material: a known password non-Python suites can use

Subject = str | Sequence[tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class Issued:
    """A certificate from the throwaway hierarchy, with its key when the hierarchy made it."""

    certificate: x509.Certificate
    private_key: PrivateKey | None
    serial_hex: str
    ca: str
    profile: str
    chain: tuple[x509.Certificate, ...]  # issuing CA first, root last
    key_uri: str | None = None  # where the key lives: pkcs11:token=...;object=... on an HSM

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


class Hierarchy:
    """A complete PKI for one test or test session; close it (or use ``with``) when done."""

    def __init__(self, service: CertificateAuthority, spec: HierarchySpec,
                 clock: FrozenClock, engine: Any,
                 listener: socket.socket | None = None) -> None:
        self.service = service
        self.spec = spec
        self.clock = clock
        self._engine = engine
        self._listener = listener
        self.issued: list[Issued] = []
        self._chains: dict[str, tuple[x509.Certificate, ...]] = {}

    @classmethod
    def from_spec(cls, spec: Path | str | Mapping[str, Any] = DEMO_SPEC, *,
                  keys: KeyBackend | None = None, database_url: str = "sqlite://",
                  profiles: ProfileSet | Path | None = None, at: dt.datetime | None = None,
                  public_url: str | None = None, port: int = 0) -> "Hierarchy":
        """Create every CA and service unit ``spec`` names (a path or an already-parsed mapping).

        Defaults: in-memory keys, an in-memory SQLite database, the repository's profiles, and
        a clock frozen at the current second (``at`` to choose it). Without ``public_url``, a
        loopback port is reserved now and every AIA, CRL and OCSP URL in the certificates
        points at it (``port``, or any free one), so :meth:`serve` later answers exactly
        where they say.
        """
        listener = None
        if public_url is None:
            try:
                listener = socket.create_server(("127.0.0.1", port))
            except OSError as exc:
                raise ConfigurationError(f"cannot listen on 127.0.0.1:{port}: "
                                         f"{exc.strerror}") from None
            public_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        if isinstance(profiles, ProfileSet):
            profile_set = profiles
        else:
            profile_set = load_profiles(Path(profiles) if profiles else REPO_ROOT / "profiles")
        parsed = load_hierarchy(spec if isinstance(spec, Mapping) else Path(spec), profile_set)
        clock = FrozenClock((at or SystemClock().now()).replace(microsecond=0))
        engine = create_engine_for(database_url, create=True)
        url = make_url(database_url)
        if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
            create_throwaway_schema(engine)  # dies with the process: no migration chain
        else:
            migrate(engine)
        service = CertificateAuthority(make_session_factory(engine),
                                              keys or MemoryBackend(), profile_set, clock,
                                              public_url)
        service.authorities.init_hierarchy(parsed)
        return cls(service, parsed, clock, engine, listener)

    # --- reading the hierarchy ------------------------------------------------------------------

    @property
    def default_ca(self) -> str:
        """The CA end entities come from unless told otherwise: the spec's last authority."""
        return self.spec.authorities[-1].name

    @property
    def root(self) -> x509.Certificate:
        return self.service.authorities.authority_certificate(self.spec.authorities[0].name)

    def ca(self, name: str) -> x509.Certificate:
        return self.service.authorities.authority_certificate(name)

    def chain(self, name: str) -> list[x509.Certificate]:
        """``name``'s certificate, then its parents up to the root (read once: a CA's
        certificate never changes, and every issue() hands the chain back)."""
        chain = self._chains.get(name)
        if chain is None:
            chain = self._chains[name] = tuple(self.service.authorities.chain(name))
        return list(chain)

    # --- issuing and revoking -------------------------------------------------------------------

    def issue(self, profile: str, subject: Subject, *, ca: str | None = None,
              key_type: str | KeySpec | None = None,
              csr: x509.CertificateSigningRequest | None = None, emails: Sequence[str] = (),
              dns_names: Sequence[str] = (), days: int | None = None,
              key_on_token: bool = False) -> Issued:
        """Issue from ``profile``: a new key of ``key_type`` (default: the profile's first) or
        the key of ``csr``. ``subject`` is a string like the CLI's or (name, value) pairs.
        A new key is wrapped under the backend's KEK, or with ``key_on_token`` a key object
        of its own (a PKCS#11 application signs with it by label)."""
        ca = ca or self.default_ca
        pairs = parse_subject(subject) if isinstance(subject, str) else list(subject)
        if csr is not None:
            source = KeySource(csr=csr)
        else:
            if isinstance(key_type, str):
                key_type = KeySpec.parse(key_type)
            source = KeySource(generate=key_type or
                               self.service.profiles.get(profile).key_algorithms[0],
                               token_object=key_on_token)
        result = self.service.issuance.issue(ca, profile, pairs, source, emails=emails,
                                    dns_names=dns_names, days=days)
        issued = Issued(result.certificate, result.private_key, result.serial_hex, ca, profile,
                        tuple(self.chain(ca)), result.key_uri)
        self.issued.append(issued)
        return issued

    def revoke(self, target: Issued | str, reason: str = "unspecified", *,
               ca: str | None = None, invalidity_date: dt.datetime | None = None) -> None:
        """Revoke an issued certificate (or a serial of ``ca``) as of the hierarchy's clock."""
        if isinstance(target, Issued):
            serial, ca = target.serial_hex, ca or target.ca
        else:
            serial = target
        self.service.revocation.revoke(ca or self.default_ca, serial, reason,
                            invalidity_date=invalidity_date)

    def crl(self, ca: str | None = None, *, delta: bool = False,
            validity: dt.timedelta | None = None) -> CrlInfo:
        """Publish a new CRL of ``ca`` now (a delta CRL with ``delta``; the CA's validity or
        ``validity``); ``.der`` is what ``/crl/<ca>.crl`` serves from then on."""
        return self.service.publication.publish_crl(ca or self.default_ca, validity=validity, delta=delta)

    @contextlib.contextmanager
    def at(self, when: dt.datetime) -> Iterator[None]:
        """Issue or revoke as of ``when``, then return to the present clock time."""
        before = self.clock.now()
        self.clock.set(ensure_utc(when))
        try:
            yield
        finally:
            self.clock.set(before)

    # --- serving ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL the certificates point at (``/ocsp``, ``/tsa``, ``/crl/<ca>.crl``,
        ``/certs/<ca>.cer``)."""
        return self.service.public_url

    def serve(self) -> contextlib.AbstractContextManager[str]:
        """Serve the real app (OCSP, TSA, CRLs, CA certificates) on the reserved loopback port
        in a background thread; yields the base URL. Answers follow the hierarchy's clock."""
        if self._listener is None:
            raise RuntimeError("serve() needs the hierarchy's own port: create it without "
                               "public_url")
        from ca.testing.serving import serve_on  # the web stack, only for suites that serve

        return serve_on(self._listener, self.service)

    # --- for suites in other languages --------------------------------------------------------

    def export(self, folder: Path | str, password: bytes = PKCS12_PASSWORD) -> Path:
        """Write every CA certificate and everything issued here to ``folder``.

        ``<ca>.pem``/``<ca>.der`` per CA; per issued certificate ``<serial>.pem``, ``.der``,
        ``-chain.pem`` (leaf, issuing CA, ..., root) and, when its key was made here in memory,
        ``-key.pem`` (PKCS#8, unencrypted) and ``.p12`` (key, certificate, chain; ``password``).
        """
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        for authority in self.spec.authorities:
            cert = self.ca(authority.name)
            _write_cert(out / authority.name, cert)
        for issued in self.issued:
            base = out / issued.serial_hex
            _write_cert(base, issued.certificate)
            (out / f"{issued.serial_hex}-chain.pem").write_bytes(b"".join(
                c.public_bytes(serialization.Encoding.PEM)
                for c in (issued.certificate, *issued.chain)))
            key = issued.private_key
            if key is None:
                continue
            try:
                pem = key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
            except KeyBackendError:  # an HSM key refuses export by design: no key file
                continue
            (out / f"{issued.serial_hex}-key.pem").write_bytes(pem)
            (out / f"{issued.serial_hex}.p12").write_bytes(
                pkcs12.serialize_key_and_certificates(
                    issued.serial_hex.encode(), key, issued.certificate,  # type: ignore[arg-type]
                    list(issued.chain), serialization.BestAvailableEncryption(password)))
        return out

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self.service.close()
        self.service.keys.close()
        self._engine.dispose()

    def __enter__(self) -> "Hierarchy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_cert(base: Path, cert: x509.Certificate) -> None:
    base.with_name(base.name + ".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    base.with_name(base.name + ".der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
