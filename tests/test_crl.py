"""CRLs: the pure builder (ca/crl.py) and publication from the database, judged by OpenSSL,
pkilint's CRL linter, cryptography and pyhanko-certvalidator."""
from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca.crl import CrlParams, RevokedEntry, build_crl
from ca.errors import IssuanceError
from ca.testing import Hierarchy
from tests import helpers_x509 as hx

NOW = dt.datetime(2026, 11, 24, 8, 0, 0, tzinfo=dt.timezone.utc)
DOCTOR = "C=VN, O=Bệnh viện Quận 11, CN=Nguyễn Văn A, UID=CCCD:079073009568"


def spec(key: str) -> dict:
    return {"authorities": [
        {"name": "root", "profile": "root-ca", "key": "ec-p256", "subject": "C=VN, O=T, CN=Root"},
        {"name": "ca", "parent": "root", "profile": "issuing-ca", "key": key,
         "subject": "C=VN, O=Bệnh viện Quận 11, CN=Issuing CA"}]}


@pytest.fixture(params=["ec-p256", "ec-p384", "rsa-3072"])
def pki(request: pytest.FixtureRequest):
    with Hierarchy.from_spec(spec(request.param), at=NOW) as hierarchy:
        yield hierarchy


def openssl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, text=True)


def lint_crl(der: bytes, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "lint.crl"
    path.write_bytes(der)
    import shutil
    import sys

    tool = shutil.which("lint_crl", path=str(Path(sys.executable).parent)) or "lint_crl"
    return subprocess.run([tool, "lint", "-t", "CRL", "-p", "PKIX", "-s", "WARNING", str(path)],
                          capture_output=True, text=True)


def test_published_crl_judged_by_others(pki: Hierarchy, tmp_path: Path) -> None:
    good = pki.issue("clinician", DOCTOR, key_type="ec-p256")
    bad = pki.issue("clinician", DOCTOR, key_type="ec-p256")
    held = pki.issue("clinician", DOCTOR, key_type="ec-p256")
    pki.revoke(bad, "keyCompromise", invalidity_date=NOW - dt.timedelta(days=2))
    pki.revoke(held, "certificateHold")
    info = pki.service.publish_crl("ca")
    assert (info.number, info.entries, info.this_update) == (1, 2, NOW)
    crl = x509.load_der_x509_crl(info.der)
    assert crl.is_signature_valid(pki.ca("ca").public_key())  # type: ignore[arg-type]
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1
    assert crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value \
        .key_identifier == pki.ca("ca").extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier).value.digest
    entry = crl.get_revoked_certificate_by_serial_number(bad.certificate.serial_number)
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == \
        x509.ReasonFlags.key_compromise
    assert entry.extensions.get_extension_for_class(x509.InvalidityDate).value \
        .invalidity_date_utc == NOW - dt.timedelta(days=2)
    assert crl.get_revoked_certificate_by_serial_number(good.certificate.serial_number) is None

    # OpenSSL: the CRL verifies, and verify -crl_check tells revoked from good
    root = hx.write_pem(tmp_path / "root.pem", pki.root)
    ca = hx.write_pem(tmp_path / "ca.pem", pki.ca("ca"))
    crl_pem = tmp_path / "ca.crl.pem"
    crl_pem.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    result = openssl("crl", "-in", str(crl_pem), "-CAfile", str(ca), "-noout", "-verify")
    assert result.returncode == 0 and "verify OK" in result.stderr + result.stdout
    text = openssl("crl", "-in", str(crl_pem), "-noout", "-text").stdout
    assert "Key Compromise" in text and "Certificate Hold" in text and "Invalidity Date" in text
    chain = tmp_path / "chain.pem"
    chain.write_bytes(root.read_bytes() + ca.read_bytes())
    at = str(int((NOW + dt.timedelta(hours=1)).timestamp()))
    for issued, expected in ((good, 0), (bad, 2)):
        leaf = hx.write_pem(tmp_path / "leaf.pem", issued.certificate)
        result = openssl("verify", "-attime", at, "-crl_check", "-CRLfile", str(crl_pem),
                         "-CAfile", str(chain), str(leaf))
        assert result.returncode == expected, result.stdout + result.stderr
        if expected:
            assert "certificate revoked" in result.stdout + result.stderr

    # pkilint's CRL linter: no finding at WARNING or worse
    lint = lint_crl(info.der, tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_certvalidator_requires_and_uses_the_crl(tmp_path: Path) -> None:
    from pyhanko_certvalidator import CertificateValidator, ValidationContext
    from pyhanko_certvalidator.errors import RevokedError

    with Hierarchy.from_spec(spec("ec-p256"), at=NOW) as pki:
        good = pki.issue("clinician", DOCTOR, key_type="ec-p256")
        bad = pki.issue("clinician", DOCTOR, key_type="ec-p256")
        pki.revoke(bad, "affiliationChanged")
        ca_crl = pki.service.publish_crl("ca").der
        root_crl = pki.service.publish_crl("root").der
        from asn1crypto import x509 as ax

        def validator(issued) -> CertificateValidator:
            context = ValidationContext(
                trust_roots=[ax.Certificate.load(hx.der_of(pki.root))],
                crls=[ca_crl, root_crl], revocation_mode="require",
                moment=NOW + dt.timedelta(hours=1), allow_fetching=False)
            return CertificateValidator(ax.Certificate.load(hx.der_of(issued.certificate)),
                                        [ax.Certificate.load(hx.der_of(pki.ca("ca")))],
                                        validation_context=context)

        import asyncio

        asyncio.run(validator(good).async_validate_usage({"non_repudiation"}))
        with pytest.raises(RevokedError):
            asyncio.run(validator(bad).async_validate_usage({"non_repudiation"}))


def test_numbers_are_monotonic_and_the_latest_is_served(tmp_path: Path) -> None:
    with Hierarchy.from_spec(spec("ec-p256"), at=NOW) as pki:
        assert pki.service.latest_crl("ca") is None
        numbers = [pki.service.publish_crl("ca").number for _ in range(3)]
        assert numbers == [1, 2, 3]
        assert pki.service.publish_crl("root").number == 1
        latest = pki.service.latest_crl("ca")
        assert latest is not None and latest.number == 3
        assert x509.load_der_x509_crl(latest.der).extensions.get_extension_for_class(
            x509.CRLNumber).value.crl_number == 3
        events = [e for e in pki.service.list_events(ca="ca") if e["action"] == "crl.publish"]
        assert [e["details"]["number"] for e in events] == [3, 2, 1]


def test_builder_edge_cases(tmp_path: Path) -> None:
    with Hierarchy.from_spec(spec("ec-p256"), at=NOW) as pki:
        issuer, key = pki.ca("ca"), pki.service.keys.load("ca")
        empty = x509.load_der_x509_crl(build_crl(issuer, key, [], CrlParams(
            7, NOW, NOW + dt.timedelta(days=1))))
        assert len(empty) == 0 and empty.is_signature_valid(issuer.public_key())  # type: ignore
        # GeneralizedTime from 2050 on (RFC 5280 5.1.2.4)
        late = dt.datetime(2050, 1, 1, tzinfo=dt.timezone.utc)
        der = build_crl(issuer, key, [RevokedEntry(2 ** 70, late)],
                        CrlParams(8, late, late + dt.timedelta(days=1)))
        from asn1crypto import crl as acrl

        parsed = acrl.CertificateList.load(der)
        assert parsed["tbs_cert_list"]["this_update"].name == "general_time"
        assert parsed["tbs_cert_list"]["revoked_certificates"][0]["revocation_date"].name == \
            "general_time"
        # a delta CRL carries a critical deltaCRLIndicator and may say removeFromCRL
        delta = x509.load_der_x509_crl(build_crl(
            issuer, key, [RevokedEntry(2 ** 70, NOW, "removeFromCRL")],
            CrlParams(9, NOW, NOW + dt.timedelta(days=1), delta_base=8)))
        indicator = delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
        assert indicator.critical and indicator.value.crl_number == 8
        with pytest.raises(IssuanceError, match="delta CRLs only"):
            build_crl(issuer, key, [RevokedEntry(2 ** 70, NOW, "removeFromCRL")],
                      CrlParams(10, NOW, NOW + dt.timedelta(days=1)))
        with pytest.raises(IssuanceError, match="not the issuer"):
            build_crl(pki.root, key, [], CrlParams(11, NOW, NOW + dt.timedelta(days=1)))
        with pytest.raises(ValueError, match="nextUpdate"):
            CrlParams(12, NOW, NOW)
        # 20,000 entries round-trip
        entries = [RevokedEntry(2 ** 64 + i, NOW - dt.timedelta(seconds=i % 500),
                                ("superseded", None, "keyCompromise")[i % 3]) for i in range(20000)]
        big = x509.load_der_x509_crl(build_crl(issuer, key, iter(entries), CrlParams(
            13, NOW, NOW + dt.timedelta(days=1))))
        assert len(big) == 20000
        assert {r.serial_number for r in big} == {e.serial for e in entries}


@pytest.mark.softhsm
def test_crl_signed_on_softhsm(hsm_backend, unique_label: str, tmp_path: Path) -> None:
    names = spec("rsa-3072")
    for authority in names["authorities"]:
        authority["name"] = f"{unique_label}-{authority['name']}"
    names["authorities"][1]["parent"] = f"{unique_label}-root"
    with Hierarchy.from_spec(names, keys=hsm_backend, at=NOW) as pki:
        leaf = pki.issue("citizen", "CN=Bùi Sĩ Tuấn, UID=CCCD:038093015572", key_type="ec-p256")
        pki.revoke(leaf, "superseded")
        info = pki.service.publish_crl(f"{unique_label}-ca")
        ca = hx.write_pem(tmp_path / "ca.pem", pki.ca(f"{unique_label}-ca"))
        (tmp_path / "c.crl").write_bytes(info.der)
        result = openssl("crl", "-inform", "DER", "-in", str(tmp_path / "c.crl"), "-CAfile",
                         str(ca), "-noout", "-verify")
        assert result.returncode == 0, result.stderr
