"""ca.issuance.tbs frames the TBSCertificate itself instead of signing the builder with a
throwaway key to read it back: here its bytes are compared with the builder's, byte for byte,
over every profile of profiles/, every subscriber key type, every issuer key type and
signature rule, with and without subjectAltNames, an empty subject, times on both sides of
2050 and serials of every length.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from ca import issuance
from ca.issuance import CertificateRequest, IssuerInfo, Urls
from ca.issuance.checks import (check_dns_names, check_emails, check_issuer, issuer_name,
                                validity)
from ca.issuance.extensions import extensions
from ca.issuance.keys import check_key
from ca.issuance.signature import lint_key, sign_builder, signature_params
from ca.errors import TincayError
from ca.keys.base import KeySpec
from ca.profiles import Profile, SignatureRule, load_profiles
from tests.test_issuance import BASE_URL, NOW, memory_key

PROFILES = load_profiles(Path(__file__).resolve().parent.parent / "profiles")
SUBSCRIBER_SPECS = ("rsa-2048", "ec-p256", "ec-p384", "ed25519")
ISSUER_CASES = [("ec-p256", "sha256", "pkcs1v15"), ("ec-p384", "sha384", "pkcs1v15"),
                ("rsa-3072", "sha256", "pkcs1v15"), ("rsa-3072", "sha512", "pss"),
                ("ed25519", "sha256", "pkcs1v15")]
SUBJECT = x509.Name([
    x509.NameAttribute(NameOID.COUNTRY_NAME, "VN", _type=x509.name._ASN1Type.PrintableString),
    x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "TP Hồ Chí Minh"),
    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bệnh viện Quận 11"),
    x509.NameAttribute(NameOID.COMMON_NAME, "Nguyễn Văn A, A101.0001 - 003848/HCM-CCHN"),
    x509.NameAttribute(NameOID.USER_ID, "CCCD:079073009568"),
    x509.NameAttribute(NameOID.USER_ID, "MST:0100686209-199")])
ALL_SPECS = tuple(KeySpec.parse(s) for s in SUBSCRIBER_SPECS + ("rsa-3072",))


def _profile(name: str, rule: SignatureRule) -> Profile:
    """A profile of profiles/ with every test key type allowed and the issuer's signature
    rule (neither changes what the builder and tbs.py are asked to encode, only which cases
    the checks let through)."""
    return dataclasses.replace(PROFILES.get(name), key_algorithms=ALL_SPECS, signature=rule)


def builder_tbs(request: CertificateRequest, issuer: IssuerInfo, urls: Urls | None) -> bytes:
    """The TBSCertificate as prepare made it before tbs.py: the builder with the same
    extensions, signed with the throwaway key, read back."""
    profile = request.profile
    self_signed = check_issuer(profile, issuer, request)
    subject_spec = check_key(profile, request.public_key)
    not_before, not_after = validity(request, issuer)
    emails = check_emails(profile, request.emails)
    dns_names = check_dns_names(profile, request.dns_names)
    algorithm, rsa_padding = signature_params(profile, issuer.key.spec)
    builder = (x509.CertificateBuilder().subject_name(request.subject)
               .issuer_name(request.subject if self_signed else issuer_name(issuer))
               .public_key(request.public_key).serial_number(request.serial)
               .not_valid_before(not_before).not_valid_after(not_after))
    for value, critical in extensions(request, issuer, urls, subject_spec, self_signed, emails,
                                      dns_names):
        builder = builder.add_extension(value, critical=critical)
    return sign_builder(builder, lint_key(issuer.key.spec), algorithm,
                        rsa_padding).tbs_certificate_bytes


def same(request: CertificateRequest, issuer: IssuerInfo, urls: Urls | None) -> x509.Certificate:
    """Prepare and sign ``request``; assert its TBS is the builder's, byte for byte."""
    prepared = issuance.prepare(request, issuer, urls)
    assert prepared.tbs_der == builder_tbs(request, issuer, urls), request.profile.name
    cert = issuance.sign(prepared, issuer)
    assert cert.tbs_certificate_bytes == prepared.tbs_der
    cert.verify_directly_issued_by(issuer.certificate or cert)
    assert prepared.preview.tbs_certificate_bytes == prepared.tbs_der
    return cert


@pytest.fixture(scope="module", params=ISSUER_CASES, ids=lambda c: "-".join(c))
def chain(request: pytest.FixtureRequest) -> tuple[IssuerInfo, SignatureRule, IssuerInfo]:
    spec, hash_name, padding_name = request.param
    rule = SignatureRule(hash_name, padding_name)
    root_key, issuing_key = memory_key("tbs-root", spec), memory_key("tbs-issuing", spec)
    root_name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
                           x509.NameAttribute(NameOID.COMMON_NAME, f"TBS Root {spec}")])
    root = same(CertificateRequest(_profile("root-ca", rule), root_name, root_key.public_key,
                                   issuance.new_serial(), NOW),
                IssuerInfo("root-ca", None, root_key), issuance.urls_for(BASE_URL, "root-ca"))
    assert root.not_valid_after_utc.year >= 2050  # GeneralizedTime on the builder's side too
    root_issuer = IssuerInfo("root-ca", root, root_key)
    issuing = same(CertificateRequest(_profile("issuing-ca", rule), SUBJECT,
                                      issuing_key.public_key, issuance.new_serial(), NOW),
                   root_issuer, issuance.urls_for(BASE_URL, "root-ca"))
    return IssuerInfo("issuing-ca", issuing, issuing_key), rule, root_issuer


LEAVES = sorted(p for p in PROFILES.names()
                if not PROFILES.get(p).self_signed and not (
                    PROFILES.get(p).basic_constraints and PROFILES.get(p).basic_constraints.ca))


@pytest.mark.parametrize("name", LEAVES)
def test_every_profile_and_key_type_frames_the_builders_bytes(
        chain: tuple[IssuerInfo, SignatureRule, IssuerInfo], name: str) -> None:
    issuer, rule, _ = chain
    profile = _profile(name, rule)
    emails = ("bs.a@benhvien-q11.example.vn",) if profile.email_san != "forbidden" else ()
    dns = ("ra.benhvien-q11.example.vn", "*.ocsp.example.vn") \
        if profile.dns_san != "forbidden" else ()
    deltas = dataclasses.replace(issuer, publishes_deltas=True)
    framed = refused = 0
    for spec in SUBSCRIBER_SPECS:
        key = memory_key(f"tbs-{name}", spec)
        for serial, sans, urls in (
                (issuance.new_serial(), (emails, dns), issuance.urls_for(BASE_URL, "issuing-ca")),
                (1 << 158 | 1, ((), ()) if profile.email_san != "required"
                 and profile.dns_san != "required" else (emails, dns), None),
                (1 << 63 | 0x80, (emails, dns), issuance.urls_for(BASE_URL, "issuing-ca", deltas=True))):
            request = CertificateRequest(profile, SUBJECT, key.public_key, serial, NOW,
                                         NOW + dt.timedelta(days=30, seconds=-1), *sans)
            signer = deltas if urls and urls.freshest_crl else issuer
            try:
                builder_tbs(request, signer, urls)
            except TincayError as exc:  # a key the profile refuses (keyUsage): prepare too
                with pytest.raises(type(exc)):
                    issuance.prepare(request, signer, urls)
                refused += 1
                continue
            same(request, signer, urls)
            framed += 1
    assert framed >= 6 and refused <= 3, (framed, refused)


def test_an_empty_subject_with_alt_names_and_times_either_side_of_2050(
        chain: tuple[IssuerInfo, SignatureRule, IssuerInfo]) -> None:
    issuer, rule, root = chain
    profile = dataclasses.replace(_profile("tls-client", rule), email_san="optional",
                                  dns_san="optional")
    key = memory_key("tbs-empty", "ec-p256")
    request = CertificateRequest(profile, x509.Name([]), key.public_key, issuance.new_serial(),
                                 NOW, emails=("a@example.vn",), dns_names=("a.example.vn",))
    cert = same(request, issuer, None)
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical
    start = dt.datetime(2049, 12, 1, tzinfo=dt.timezone.utc)  # UTCTime .. GeneralizedTime
    cert = same(CertificateRequest(profile, SUBJECT, key.public_key, issuance.new_serial(),
                                   start, start + dt.timedelta(days=60)), root, None)
    assert cert.not_valid_after_utc.year == 2050
