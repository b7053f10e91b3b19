"""ca/testing.py: throwaway hierarchies as a test suite would use them, judged by OpenSSL and
pyhanko-certvalidator."""
from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from ca.errors import SubjectError
from ca.testing import PKCS12_PASSWORD, Hierarchy
from tests import helpers_x509 as hx

DOCTOR = "C=VN, O=Bệnh viện Quận 11, CN=Nguyễn Văn A, UID=CCCD:079073009568"
NOW = dt.datetime(2026, 11, 24, 8, 0, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def pki():
    with Hierarchy.from_spec(at=NOW) as hierarchy:
        yield hierarchy


def test_demo_hierarchy_and_a_signing_doctor(pki: Hierarchy, tmp_path: Path) -> None:
    doctor = pki.issue("clinician", DOCTOR, key_type="ec-p256")
    assert doctor.ca == "issuing-ca" and [c.subject for c in doctor.chain] == \
        [pki.ca("issuing-ca").subject, pki.root.subject]
    record = b"Benh an dien tu"
    signature = doctor.private_key.sign(record, ec.ECDSA(hashes.SHA256()))  # type: ignore
    doctor.certificate.public_key().verify(signature, record,  # type: ignore[call-arg]
                                           ec.ECDSA(hashes.SHA256()))
    path = hx.certvalidator_validate(doctor.certificate, [pki.ca("issuing-ca")], [pki.root],
                                     NOW + dt.timedelta(minutes=1),
                                     key_usage={"non_repudiation"})
    assert path.pkix_len == 2
    rsa = pki.issue("organization-seal", "C=VN, O=Sở Y tế, CN=Sở Y tế, UID=MST:0400260612")
    assert rsa.certificate.public_key().key_size == 2048  # the profile's first key type
    rsa.private_key.sign(b"x", padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr]
    with pytest.raises(SubjectError):
        pki.issue("clinician", "CN=no uid, C=VN")


def test_time_travel_makes_expired_and_not_yet_valid_certificates(pki: Hierarchy,
                                                                  tmp_path: Path) -> None:
    with pki.at(NOW + dt.timedelta(days=10)):
        future = pki.issue("citizen", "CN=Trần B, UID=CCCD:001234567890", key_type="ec-p256")
    expired = pki.issue("citizen", "CN=Trần C, UID=CCCD:001234567891", key_type="ec-p256",
                        days=1)
    assert pki.clock.now() == NOW
    assert future.certificate.not_valid_before_utc == NOW + dt.timedelta(days=10)
    root = hx.write_pem(tmp_path / "root.pem", pki.root)
    ca = hx.write_pem(tmp_path / "ca.pem", pki.ca("issuing-ca"))
    later = NOW + dt.timedelta(days=2)
    result = hx.openssl_verify(hx.write_pem(tmp_path / "e.pem", expired.certificate), root, ca,
                               attime=later)
    assert result.returncode != 0 and "certificate has expired" in result.stdout + result.stderr
    result = hx.openssl_verify(hx.write_pem(tmp_path / "f.pem", future.certificate), root, ca,
                               attime=later)
    assert result.returncode != 0 and "not yet valid" in result.stdout + result.stderr


def test_revoke_and_export_for_other_languages(pki: Hierarchy, tmp_path: Path) -> None:
    doctor = pki.issue("clinician", DOCTOR, key_type="ec-p256")
    pki.revoke(doctor, "keyCompromise")
    assert pki.service.listings.show_certificate(doctor.serial_hex)["revocation_reason"] == "keyCompromise"
    out = pki.export(tmp_path / "pki")
    for name in ("root-ca.pem", "root-ca.der", "issuing-ca.pem", f"{doctor.serial_hex}.pem",
                 f"{doctor.serial_hex}.der", f"{doctor.serial_hex}-chain.pem",
                 f"{doctor.serial_hex}-key.pem", f"{doctor.serial_hex}.p12"):
        assert (out / name).stat().st_size > 0, name
    info = subprocess.run(["openssl", "pkcs12", "-in", str(out / f"{doctor.serial_hex}.p12"),
                           "-passin", f"pass:{PKCS12_PASSWORD.decode()}", "-nodes"],
                          capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert info.stdout.count("BEGIN CERTIFICATE") == 3 and "BEGIN PRIVATE KEY" in info.stdout
    result = hx.openssl_verify(out / f"{doctor.serial_hex}.pem", out / "root-ca.pem",
                               out / "issuing-ca.pem", attime=NOW + dt.timedelta(minutes=1))
    assert result.returncode == 0, result.stderr
    chain = x509.load_pem_x509_certificates((out / f"{doctor.serial_hex}-chain.pem").read_bytes())
    assert chain == [doctor.certificate, pki.ca("issuing-ca"), pki.root]


def test_an_inline_spec_with_its_own_names() -> None:
    spec = {"authorities": [
        {"name": "r", "profile": "root-ca", "key": "ec-p256", "subject": "C=VN, O=T, CN=R"},
        {"name": "i", "parent": "r", "profile": "issuing-ca", "key": "ec-p256",
         "subject": "C=VN, O=T, CN=I"}]}
    with Hierarchy.from_spec(spec) as pki:
        leaves = [pki.issue("citizen", f"CN=Học sinh {i}, UID=CCCD:00123456789{i}",
                            key_type="ec-p256") for i in range(10)]
        assert {leaf.ca for leaf in leaves} == {"i"}
        assert len({leaf.serial_hex for leaf in leaves}) == 10
        assert len(pki.service.listings.list_certificates(ca="i")) == 10


EXAMPLE = '''
import datetime as dt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

def test_demo(pki):
    doctor = pki.issue("clinician", "C=VN, O=BV Q11, CN=Nguyễn Văn A, UID=CCCD:079073009568",
                       key_type="ec-p256")
    doctor.private_key.sign(b"x", ec.ECDSA(hashes.SHA256()))
    assert doctor.ca == "issuing-ca"

@pytest.mark.tincay_spec({"authorities": [{"name": "only-root", "profile": "root-ca",
    "key": "ec-p256", "subject": "C=VN, O=T, CN=R"}]})
def test_marker(pki):
    assert [a.name for a in pki.spec.authorities] == ["only-root"]

def test_clock(pki, pki_clock):
    start = pki_clock.now()
    pki_clock.advance(dt.timedelta(days=30))
    leaf = pki.issue("citizen", "CN=A, UID=CCCD:001234567890", key_type="ec-p256")
    assert leaf.certificate.not_valid_before_utc == start + dt.timedelta(days=30)

def test_session(pki_session):
    assert pki_session.root.subject == pki_session.root.issuer
'''


def test_pytest_plugin_fixtures(pytester: pytest.Pytester) -> None:
    """The installed plugin (pytest11 entry point) as a signing-software suite would use it."""
    pytester.makepyfile(test_example=EXAMPLE)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_testing_serve_for_other_languages(tmp_path: Path) -> None:
    """What a Java, Go or JavaScript suite does: start `tincay testing serve`, read the JSON
    line, and use the URLs and files with its own tools (OpenSSL here)."""
    import json
    import signal
    import subprocess
    import sys
    import urllib.request

    tincay = str(Path(sys.executable).with_name("tincay"))
    server = subprocess.Popen(
        [tincay, "testing", "serve", "--export", str(tmp_path / "pki"), "--issue",
         "clinician:C=VN, O=BV Q11, CN=Nguyễn Văn A, UID=CCCD:079073009568"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(server.stdout.readline())
        [leaf] = info["issued"]
        ca_pem = info["authorities"]["issuing-ca"]["pem"]
        chain = tmp_path / "chain.pem"
        chain.write_text(Path(info["authorities"]["root-ca"]["pem"]).read_text()
                         + Path(ca_pem).read_text())
        ocsp = subprocess.run(["openssl", "ocsp", "-issuer", ca_pem, "-cert", leaf["certificate"],
                               "-url", info["ocsp"], "-CAfile", str(chain)],
                              capture_output=True, text=True, timeout=30)
        assert f"{leaf['certificate']}: good" in ocsp.stdout, ocsp.stdout + ocsp.stderr
        crl = tmp_path / "ca.crl"
        crl.write_bytes(urllib.request.urlopen(info["authorities"]["issuing-ca"]["crl"],
                                               timeout=10).read())
        verified = subprocess.run(["openssl", "verify", "-crl_check", "-CRLfile", str(crl),
                                   "-CAfile", str(chain), leaf["certificate"]],
                                  capture_output=True, text=True)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        query = tmp_path / "q.tsq"
        subprocess.run(["openssl", "ts", "-query", "-data", leaf["certificate"], "-sha256",
                        "-cert", "-out", str(query)], check=True, capture_output=True)
        post = urllib.request.Request(info["tsa"], data=query.read_bytes(), headers={
            "Content-Type": "application/timestamp-query"})
        (tmp_path / "r.tsr").write_bytes(urllib.request.urlopen(post, timeout=10).read())
        ts = subprocess.run(["openssl", "ts", "-verify", "-data", leaf["certificate"], "-in",
                             str(tmp_path / "r.tsr"), "-CAfile", str(chain)],
                            capture_output=True, text=True)
        assert ts.returncode == 0, ts.stdout + ts.stderr
        p12 = subprocess.run(["openssl", "pkcs12", "-in", leaf["pkcs12"], "-passin",
                              f"pass:{info['password']}", "-nokeys", "-noout"],
                             capture_output=True, text=True)
        assert p12.returncode == 0, p12.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    assert (tmp_path / "pki" / f"{leaf['serial']}-key.pem").exists()  # --export: the caller's


def test_testing_serve_removes_its_own_keys_and_says_when_the_port_is_taken() -> None:
    """Without --export the keys go to a temporary folder that is gone once the server stops;
    a port in use is one line, not a traceback."""
    import json
    import signal
    import socket
    import subprocess
    import sys

    tincay = str(Path(sys.executable).with_name("tincay"))
    server = subprocess.Popen(
        [tincay, "testing", "serve", "--issue", "clinician:C=VN, O=BV Q11, CN=A, UID=CCCD:079073009568"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(server.stdout.readline())
        key = Path(info["issued"][0]["key"])
        assert key.exists()
        port = int(info["url"].rsplit(":", 1)[1])
        taken = subprocess.run([tincay, "testing", "serve", "--port", str(port)],
                               capture_output=True, text=True, timeout=60)
        assert taken.returncode == 1, taken.stderr
        assert taken.stderr.startswith(f"tincay: error: cannot listen on 127.0.0.1:{port}: ")
        assert taken.stderr.count("\n") == 1 and "Traceback" not in taken.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    assert not key.parent.exists()
    with socket.socket() as probe:  # and its port is free again
        probe.bind(("127.0.0.1", port))


def test_testing_serve_refuses_bad_input(tmp_path: Path) -> None:
    import subprocess
    import sys

    tincay = str(Path(sys.executable).with_name("tincay"))
    shape = subprocess.run([tincay, "testing", "serve", "--issue", "clinician"],
                           capture_output=True, text=True, timeout=60)
    assert shape.returncode == 2 and "PROFILE:SUBJECT" in shape.stderr
    unknown = subprocess.run([tincay, "testing", "serve", "--issue", "surgeon:CN=x"],
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 1 and "surgeon" in unknown.stderr


def test_serve_lets_certvalidator_fetch_live_ocsp() -> None:
    """The documented example: a signer certificate validated by pyhanko-certvalidator, which
    fetches OCSP from the URL in the certificate's AIA, served by ``pki.serve()``."""
    import asyncio

    from pyhanko_certvalidator import CertificateValidator, ValidationContext
    from pyhanko_certvalidator.errors import RevokedError

    with Hierarchy.from_spec() as pki, pki.serve():
        doctor = pki.issue("clinician", "C=VN, O=Bệnh viện Quận 11, CN=Nguyễn Văn A, "
                                        "UID=CCCD:079073009568", key_type="ec-p256")

        def validate() -> None:
            context = ValidationContext(trust_roots=[hx.asn1_cert(pki.root)],
                                        allow_fetching=True, revocation_mode="require")
            validator = CertificateValidator(
                hx.asn1_cert(doctor.certificate),
                intermediate_certs=[hx.asn1_cert(pki.ca("issuing-ca"))],
                validation_context=context)
            asyncio.run(validator.async_validate_usage({"non_repudiation"}))

        validate()
        pki.revoke(doctor, "keyCompromise")
        with pytest.raises(RevokedError):
            validate()


def test_three_level_hierarchy_validates_with_live_revocation_at_every_level(
        tmp_path: Path) -> None:
    """profiles/hierarchies/three-level.yaml: root -> health-ca (intermediate-ca, pathLen 1)
    -> hospital-ca (issuing-ca, pathLen 0) -> leaves. OpenSSL verifies the 4-certificate path
    with every CRL; pyhanko-certvalidator fetches OCSP for both CA levels below the root and
    the leaf; pathLen stops a fourth CA level; pkilint finds no error in the intermediate."""
    import asyncio

    from pyhanko_certvalidator import CertificateValidator, ValidationContext
    from pyhanko_certvalidator.errors import RevokedError

    import yaml

    from ca.errors import IssuanceError
    from ca.hierarchy import load_hierarchy
    from ca.settings import REPO_ROOT

    spec = REPO_ROOT / "profiles" / "hierarchies" / "three-level.yaml"
    with Hierarchy.from_spec(spec) as pki, pki.serve() as url:
        doctor = pki.issue("clinician", "C=VN, O=Bệnh viện Đa khoa Tincay, CN=Nguyễn Văn A, "
                                        "UID=CCCD:079073009568", key_type="ec-p256")
        assert [c.subject.rfc4514_string() for c in doctor.chain] == [
            pki.ca("hospital-ca").subject.rfc4514_string(),
            pki.ca("health-ca").subject.rfc4514_string(), pki.root.subject.rfc4514_string()]
        health = pki.ca("health-ca")
        assert health.extensions.get_extension_for_class(x509.BasicConstraints).value \
            .path_length == 1
        assert not hx.at_least(hx.pkilint_pkix(health), "ERROR")

        leaf = hx.write_pem(tmp_path / "leaf.pem", doctor.certificate)
        chain = hx.write_pem(tmp_path / "chain.pem", pki.ca("hospital-ca"), health)
        root = hx.write_pem(tmp_path / "root.pem", pki.root)
        crls = tmp_path / "crls.pem"
        crls.write_bytes(b"".join(
            subprocess.run(["openssl", "crl", "-inform", "DER"], input=pki.crl(ca).der,
                           capture_output=True, check=True).stdout
            for ca in ("root-ca", "health-ca", "hospital-ca")))
        verified = subprocess.run(["openssl", "verify", "-crl_check_all", "-CRLfile", str(crls),
                                   "-CAfile", str(root), "-untrusted", str(chain), str(leaf)],
                                  capture_output=True, text=True)
        assert verified.returncode == 0, verified.stdout + verified.stderr

        def validate() -> None:
            context = ValidationContext(trust_roots=[hx.asn1_cert(pki.root)],
                                        allow_fetching=True, revocation_mode="require")
            asyncio.run(CertificateValidator(
                hx.asn1_cert(doctor.certificate),
                intermediate_certs=[hx.asn1_cert(pki.ca("hospital-ca")), hx.asn1_cert(health)],
                validation_context=context).async_validate_usage({"non_repudiation"}))

        validate()
        hospital_serial = format(pki.ca("hospital-ca").serial_number, "x")
        pki.revoke(hospital_serial, "cACompromise", ca="health-ca")
        with pytest.raises(RevokedError):  # the hospital CA, by the intermediate's OCSP
            validate()
        assert url == pki.url

        for parent, profile in (("hospital-ca", "issuing-ca"), ("health-ca", "intermediate-ca")):
            grown = yaml.safe_load(spec.read_text(encoding="utf-8"))
            grown["authorities"].append({"name": "ward-ca", "parent": parent, "profile": profile,
                                         "key": "ec-p256", "subject": "C=VN, O=Khoa Nội, CN=Ward"})
            with pytest.raises(IssuanceError, match="pathLenConstraint"):
                pki.service.authorities.init_hierarchy(load_hierarchy(grown, pki.service.profiles))
