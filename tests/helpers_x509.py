"""Independent checkers for what tincay issues: OpenSSL, pkilint and pyhanko-certvalidator.

Tests judge our certificates, CRLs and chains with other people's code, never with the code that
made them. Everything here takes cryptography objects or DER bytes and returns plain data, so any
test module (issuance, CRL, OCSP, TSA, service) can reuse it.
"""
from __future__ import annotations

import asyncio
import functools
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable, Sequence, Union

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

CertLike = Union[x509.Certificate, bytes, asn1_x509.Certificate]

OPENSSL = shutil.which("openssl")


def der_of(cert: CertLike) -> bytes:
    """DER bytes of a cryptography or asn1crypto certificate (or DER passed through)."""
    if isinstance(cert, x509.Certificate):
        return cert.public_bytes(serialization.Encoding.DER)
    if isinstance(cert, asn1_x509.Certificate):
        return cert.dump()
    return bytes(cert)


def asn1_cert(cert: CertLike) -> asn1_x509.Certificate:
    """The asn1crypto form pyhanko and certvalidator take."""
    return asn1_x509.Certificate.load(der_of(cert))


def write_pem(path: Path, *certs: CertLike) -> Path:
    """Write one or more certificates as a PEM bundle (what openssl's -CAfile etc. read)."""
    pems = [x509.load_der_x509_certificate(der_of(c)).public_bytes(serialization.Encoding.PEM)
            for c in certs]
    path.write_bytes(b"".join(pems))
    return path


# --- OpenSSL --------------------------------------------------------------------------------

def openssl_verify(leaf_pem: Path, root_pem: Path, *untrusted_pems: Path,
                   attime: datetime | None = None, purpose: str | None = None,
                   strict: bool = True) -> subprocess.CompletedProcess:
    """``openssl verify [-x509_strict] -CAfile root [-untrusted ...] leaf``; caller checks rc.

    ``attime`` pins the verification time (our tests freeze the clock, possibly in the future).
    """
    if OPENSSL is None:
        raise RuntimeError("openssl is not on PATH")
    args = [OPENSSL, "verify"]
    if strict:
        args.append("-x509_strict")
    args += ["-CAfile", str(root_pem)]
    for pem in untrusted_pems:
        args += ["-untrusted", str(pem)]
    if attime is not None:
        args += ["-attime", str(int(attime.timestamp()))]
    if purpose is not None:
        args += ["-purpose", purpose]
    args.append(str(leaf_pem))
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)


# --- pkilint --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    """One pkilint finding: severity name (FATAL/ERROR/WARNING/NOTICE/INFO), code, message."""

    severity: str
    code: str
    message: str | None
    node: str

    def __str__(self) -> str:
        message = f": {self.message}" if self.message else ""
        return f"{self.severity} {self.code} at {self.node}{message}"


SEVERITY_ORDER = ("FATAL", "ERROR", "WARNING", "NOTICE", "INFO", "DEBUG")


def at_least(findings: Iterable[Finding], severity: str = "ERROR") -> list[Finding]:
    """The findings at ``severity`` or worse (FATAL is the worst)."""
    limit = SEVERITY_ORDER.index(severity)
    return [f for f in findings if SEVERITY_ORDER.index(f.severity) <= limit]


def _collect(results: Iterable) -> list[Finding]:
    findings = []
    for result in results:
        for description in result.finding_descriptions:
            findings.append(Finding(description.finding.severity.name, description.finding.code,
                                    description.message, str(result.node.path)))
    return findings


def _load_pkilint_cert(cert: CertLike):
    from pkilint import loader

    return loader.RFC5280CertificateDocumentLoader().load_der_document(der_of(cert), "cert")


@functools.lru_cache(maxsize=1)
def _pkix_validator():
    from pkilint.pkix import certificate, extension, name

    return certificate.create_pkix_certificate_validator_container(
        certificate.create_decoding_validators(name.ATTRIBUTE_TYPE_MAPPINGS,
                                               extension.EXTENSION_MAPPINGS),
        [
            certificate.create_issuer_validator_container([]),
            certificate.create_validity_validator_container(),
            certificate.create_subject_validator_container([]),
            certificate.create_extensions_validator_container([]),
            certificate.create_spki_validator_container([]),
        ],
    )


def pkilint_pkix(cert: CertLike) -> list[Finding]:
    """Every finding of pkilint's RFC 5280 linter (what ``lint_pkix_cert lint -s ALL`` prints).

    Uses pkilint's Python API, built the same way as its CLI, because spawning the CLI per
    certificate costs about a second of imports.
    """
    return _collect(_pkix_validator().validate(_load_pkilint_cert(cert).root))


@functools.lru_cache(maxsize=None)
def _etsi_validator(certificate_type):
    from pkilint import etsi
    from pkilint.pkix import certificate

    return certificate.create_pkix_certificate_validator_container(
        etsi.create_decoding_validators(certificate_type),
        etsi.create_validators(certificate_type),
    )


def etsi_certificate_type(cert: CertLike) -> str:
    """The ETSI certificate type pkilint detects (``lint_etsi_cert lint -d -o``)."""
    from pkilint import etsi

    return etsi.determine_certificate_type(_load_pkilint_cert(cert)).to_option_str


def pkilint_etsi(cert: CertLike, certificate_type: str | None = None) -> list[Finding]:
    """Findings of ``lint_etsi_cert lint -d`` (or ``-t TYPE``), filtered as the CLI filters."""
    from pkilint import etsi, finding_filter
    from pkilint.etsi import etsi_constants

    document = _load_pkilint_cert(cert)
    if certificate_type is None:
        cert_type = etsi.determine_certificate_type(document)
    else:
        cert_type = etsi_constants.CertificateType.from_option_str(certificate_type)
    results = _etsi_validator(cert_type).validate(document.root)
    results, _ = finding_filter.filter_results(etsi.create_etsi_finding_filters(cert_type),
                                               results)
    return _collect(results)


# --- pyhanko-certvalidator ------------------------------------------------------------------

def certvalidator_validate(leaf: CertLike, intermediates: Sequence[CertLike],
                           roots: Sequence[CertLike], moment: datetime,
                           key_usage: Iterable[str] = (),
                           extended_key_usage: Iterable[str] | None = None,
                           extended_optional: bool = False):
    """Validate a path with pyhanko-certvalidator (no fetching, soft-fail revocation).

    ``key_usage`` uses its names (``non_repudiation``, ``digital_signature`` ...). Returns the
    ValidationPath; raises the library's PathValidationError / InvalidCertificateError.
    """
    from pyhanko_certvalidator import CertificateValidator, ValidationContext

    def load(cert: CertLike) -> asn1_x509.Certificate:
        return asn1_x509.Certificate.load(der_of(cert))

    context = ValidationContext(trust_roots=[load(r) for r in roots], moment=moment,
                                allow_fetching=False, revocation_mode="soft-fail")
    validator = CertificateValidator(load(leaf), intermediate_certs=[load(c) for c in intermediates],
                                     validation_context=context)
    return asyncio.run(validator.async_validate_usage(
        set(key_usage), set(extended_key_usage) if extended_key_usage is not None else None,
        extended_optional))


def pkilint_cli(tool: str, cert_path: Path, *args: str,
                severity: str = "ERROR") -> subprocess.CompletedProcess:
    """Run a pkilint CLI (``lint_pkix_cert``, ``lint_etsi_cert`` ...) from the running venv.

    Its exit code is the number of findings at ``severity`` or worse, so 0 means clean. Slow
    (about a second of imports); use it to cross-check the API-based helpers, not in loops.
    """
    import sys

    executable = Path(sys.executable).parent / tool
    command = [str(executable) if executable.exists() else tool, "lint", *args, "-s", severity,
               str(cert_path)]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
