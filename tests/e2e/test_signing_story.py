"""The end-to-end story (issue 5), with nothing mocked: keys on SoftHSM, the real app served on
loopback, pyHanko signing through PKCS#11 in a process of its own (tests/e2e/pkcs11_sign.py) and
pyHanko's validator as the judge. docs/signing-story.md walks through the same steps.

1. A clinician's key is generated on the HSM by the CA core, her certificate issued from the
   clinician profile. The EMR signs a medical record through PKCS#11 with a timestamp from the
   tincay TSA and the tincay OCSP answers embedded (PAdES B-LT); the validator accepts it.
2. Her certificate is revoked two hours later (key compromise). A fresh validation fetching OCSP
   now reports it revoked; the long-term validation of the signed record, as of its signature
   timestamp and from the data embedded in it, still accepts it.
3. A teacher signs a transcript; the school's organisation seal countersigns it (a second
   signature over the whole file); both validate, each with its own timestamp.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ca.keys.uri import Pkcs11Uri
from ca.testing import Hierarchy
from tests import helpers_x509 as hx

pytestmark = [pytest.mark.softhsm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
# Signed two hours ago, revoked now: the hierarchy's clock is moved between the two.
SIGNED_AT = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=2)
CLINICIAN = ("C=VN, O=Bệnh viện Quận 11, T=BS CK II, CN=Nguyễn Văn A, "
             "UID=CCCD:079073009568, UID=MST:0301824642")
TEACHER = "C=VN, O=Trường THPT Lê Quý Đôn, CN=Trần Thị Bích, UID=CCCD:079186001234"
SCHOOL = "C=VN, L=Hà Nội, O=Trường THPT Lê Quý Đôn, UID=MST:0101234567, CN=Trường THPT Lê Quý Đôn"


def _spec(prefix: str) -> dict:
    """A root, an issuing CA, an OCSP responder and a TSA, all keys on the HSM (labels unique
    on the session's token)."""
    def name(n: str) -> str:
        return f"{prefix}-{n}"
    return {"authorities": [
        {"name": name("root"), "profile": "root-ca", "key": "ec-p256",
         "subject": "C=VN, O=Sở Y tế TP.HCM, CN=Y tế Root CA"},
        {"name": name("issuing"), "parent": name("root"), "profile": "issuing-ca",
         "key": "ec-p256", "subject": "C=VN, O=Sở Y tế TP.HCM, CN=Y tế Issuing CA"}],
        "services": [
        {"name": name("ocsp"), "kind": "ocsp", "issuer": name("issuing"),
         "profile": "ocsp-responder", "key": "ec-p256",
         "subject": "C=VN, O=Sở Y tế TP.HCM, CN=Y tế OCSP"},
        {"name": name("tsa"), "kind": "tsa", "issuer": name("issuing"), "profile": "tsa",
         "key": "ec-p256", "subject": "C=VN, O=Sở Y tế TP.HCM, CN=Y tế TSA"}]}


class Story:
    def __init__(self, pki: Hierarchy, url: str, env: dict[str, str], folder: Path) -> None:
        self.pki, self.url, self.env, self.folder = pki, url, env, folder
        self.root = hx.write_pem(folder / "root.pem", pki.root)
        self.roots = [hx.asn1_cert(pki.root)]

    def sign_through_pkcs11(self, issued, source: Path, field: str) -> Path:
        """The signing application, in its own process, the PIN in its environment only."""
        cert = hx.write_pem(self.folder / f"{issued.serial_hex}.pem", issued.certificate)
        chain = hx.write_pem(self.folder / "issuing.pem", issued.chain[0])
        target = source.with_name(f"{source.stem}-{field}.pdf")
        done = subprocess.run(
            [sys.executable, "-m", "tests.e2e.pkcs11_sign", self.env["TINCAY_PKCS11_MODULE"],
             self.env["TINCAY_PKCS11_TOKEN"], Pkcs11Uri.parse(issued.key_uri).object,
             str(cert), str(self.root), f"{self.url}/tsa", str(source), str(target), field,
             str(chain)],
            cwd=ROOT, env={**os.environ, **self.env}, capture_output=True, text=True,
            timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        assert self.env["TINCAY_PKCS11_PIN"] not in " ".join(done.args)
        return target

    def validate(self, pdf: Path, *, fetch: bool) -> list:
        """Every signature of ``pdf``, validated now; with ``fetch`` the validator asks the
        served OCSP responder itself and requires an answer."""
        from pyhanko.pdf_utils.reader import PdfFileReader
        from pyhanko.sign.validation import async_validate_pdf_signature
        from pyhanko_certvalidator import ValidationContext

        def context() -> ValidationContext:
            return ValidationContext(trust_roots=self.roots, allow_fetching=fetch,
                                     revocation_mode="require" if fetch else "soft-fail")
        with pdf.open("rb") as handle:
            reader = PdfFileReader(handle, strict=False)
            return [asyncio.run(async_validate_pdf_signature(
                signature, signer_validation_context=context(),
                ts_validation_context=context())) for signature in reader.embedded_signatures]

    def validate_long_term(self, pdf: Path) -> list:
        """B-LT validation: each signature as of its trusted signature timestamp, from the
        certificates and OCSP responses embedded in the file's DSS, fetching nothing and
        requiring revocation data (what a reader does years later, offline)."""
        from pyhanko.pdf_utils.reader import PdfFileReader
        from pyhanko.sign.validation import async_validate_pdf_signature
        from pyhanko.sign.validation.dss import DocumentSecurityStore

        with pdf.open("rb") as handle:
            reader = PdfFileReader(handle, strict=False)
            dss = DocumentSecurityStore.read_dss(reader)
            results = []
            for signature in reader.embedded_signatures:
                token_time = _signature_timestamp(signature)
                offline = {"trust_roots": self.roots, "allow_fetching": False,
                           "revocation_mode": "require", "moment": token_time}
                results.append(asyncio.run(async_validate_pdf_signature(
                    signature, signer_validation_context=dss.as_validation_context(offline),
                    ts_validation_context=dss.as_validation_context(offline))))
            return results


def _signature_timestamp(signature) -> dt.datetime:
    """genTime of the signature's RFC 3161 token (the signature existed then)."""
    [token] = [a["values"][0] for a in signature.signer_info["unsigned_attrs"]
               if a["type"].native == "signature_time_stamp_token"]
    return token["content"]["encap_content_info"]["content"].parsed["gen_time"].native


@pytest.fixture
def story(hsm_backend, softhsm_env, unique_label: str, tmp_path: Path):
    with Hierarchy.from_spec(_spec(unique_label), keys=hsm_backend, at=SIGNED_AT) as pki, \
            pki.serve() as url:
        yield Story(pki, url, softhsm_env, tmp_path)


def _record(tmp_path: Path, title: str) -> Path:
    from tests.test_tsa import _minimal_pdf

    path = tmp_path / f"{title}.pdf"
    path.write_bytes(_minimal_pdf())
    return path


def _embedded_ocsp_responders(pdf: Path) -> set[str]:
    """Who signed the OCSP responses in the file's DSS (PAdES B-LT)."""
    from asn1crypto import ocsp as asn1_ocsp
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation.dss import DocumentSecurityStore

    with pdf.open("rb") as handle:
        dss = DocumentSecurityStore.read_dss(PdfFileReader(handle, strict=False))
        responders = set()
        for stream in dss.ocsps:  # references to PDF streams holding DER OCSPResponses
            basic = asn1_ocsp.OCSPResponse.load(stream.get_object().data).basic_ocsp_response
            responders |= {c.subject.human_friendly for c in basic["certs"]}
        return responders


def test_clinician_record_signed_through_pkcs11_outlives_her_revocation(story: Story,
                                                                       tmp_path: Path) -> None:
    pki = story.pki
    doctor = pki.issue("clinician", CLINICIAN, key_type="ec-p256", key_on_token=True)
    assert doctor.key_uri and doctor.key_uri.startswith("pkcs11:")  # a token object

    signed = story.sign_through_pkcs11(doctor, _record(tmp_path, "benh-an-0042"), "BacSi")
    assert any("Y tế OCSP" in who for who in _embedded_ocsp_responders(signed))
    [now] = story.validate(signed, fetch=True)
    assert now.intact and now.valid and now.trusted and now.bottom_line, \
        now.pretty_print_details()
    assert now.timestamp_validity is not None and now.timestamp_validity.valid and \
        now.timestamp_validity.trusted
    assert now.timestamp_validity.timestamp == SIGNED_AT  # the tincay TSA's genTime

    pki.clock.set(SIGNED_AT + dt.timedelta(hours=2))
    pki.revoke(doctor, "keyCompromise")
    [after] = story.validate(signed, fetch=True)
    assert after.intact and not after.bottom_line and after.revoked, \
        after.pretty_print_details()
    [long_term] = story.validate_long_term(signed)
    assert long_term.intact and long_term.valid and long_term.bottom_line, \
        long_term.pretty_print_details()


def test_teacher_transcript_countersigned_by_the_school_seal(story: Story,
                                                             tmp_path: Path) -> None:
    from pyhanko.sign.diff_analysis import ModificationLevel

    teacher = story.pki.issue("teacher", TEACHER, key_type="ec-p256", key_on_token=True)
    school = story.pki.issue("organization-seal", SCHOOL, key_type="ec-p256",
                             key_on_token=True)
    transcript = story.sign_through_pkcs11(teacher, _record(tmp_path, "hoc-ba-12A1"),
                                           "GiaoVien")
    sealed = story.sign_through_pkcs11(school, transcript, "ConDauTruong")
    first, second = story.validate(sealed, fetch=True)
    for status in (first, second):
        assert status.intact and status.valid and status.bottom_line, \
            status.pretty_print_details()
        assert status.timestamp_validity is not None and status.timestamp_validity.valid \
            and status.timestamp_validity.trusted
    assert "Trần Thị Bích" in first.signing_cert.subject.human_friendly
    assert "Trường THPT Lê Quý Đôn" in second.signing_cert.subject.human_friendly
    # after the teacher signed, only a signature (the seal) and validation data were added;
    # after the seal, only validation data (the DSS of B-LT)
    assert first.modification_level == ModificationLevel.FORM_FILLING
    assert second.modification_level == ModificationLevel.LTA_UPDATES
    assert [s.intact and s.bottom_line for s in story.validate_long_term(sealed)] == [True, True]
