"""Subject names (ca/subject.py): parsing operator input, checking it against a profile, DER.

Vietnamese names must reach the certificate byte for byte as UTF8String; C and serialNumber are
PrintableString, E and DC IA5String. The DER is inspected with asn1crypto, not with the code that
wrote it.
"""
from __future__ import annotations

import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from asn1crypto import core as asn1_core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from ca.errors import SubjectError
from ca.profiles import Profile, SubjectAttributeRule
from ca.subject import (ATTRIBUTES, attribute_type, build_name, canonical_name, format_name,
                        parse_subject)

UID_OID = "0.9.2342.19200300.100.1.1"
DOCTOR_CN = "Nguyễn Văn A, A101.0001 - 003848/HCM-CCHN"


def rule(name: str, oid: str, **kw) -> SubjectAttributeRule:
    return SubjectAttributeRule(name, oid, **kw)


PROFILE = Profile(
    "clinician", Path("tests/test_subject.py"),
    subject=(
        rule("C", "2.5.4.6", required=True, value="VN"),
        rule("ST", "2.5.4.8"),
        rule("O", "2.5.4.10"),
        rule("T", "2.5.4.12"),
        rule("givenName", "2.5.4.42"),
        rule("surname", "2.5.4.4"),
        rule("CN", "2.5.4.3", required=True, max_length=64),
        rule("serialNumber", "2.5.4.5", patterns=(r"PNOVN-\d{12}",)),
        rule("UID", UID_OID, required=True, max_count=2,
             patterns=(r"CCCD:\d{12}", r"MST:\d{10}(-\d{3})?")),
        rule("E", "1.2.840.113549.1.9.1"),
        rule("DC", "0.9.2342.19200300.100.1.25"),
        rule("custom", "1.3.6.1.4.1.59999.9.1"),
    ))


def der_attributes(name: x509.Name) -> list[tuple[str, int, bytes]]:
    """(dotted OID, universal tag, content octets) of every attribute, in DER order."""
    parsed = asn1_x509.Name.load(name.public_bytes())
    out = []
    for rdn in parsed.chosen:
        for attribute in rdn:
            value = asn1_core.load(attribute["value"].dump())  # the universal type as encoded
            out.append((attribute["type"].dotted, value.tag, value.contents))
    return out


# --- attribute table ------------------------------------------------------------------------

def test_attribute_table_names_and_aliases() -> None:
    assert {a.name for a in ATTRIBUTES} == {
        "C", "ST", "L", "O", "OU", "T", "CN", "UID", "E", "givenName", "surname",
        "serialNumber", "organizationIdentifier", "street", "postalCode", "DC", "pseudonym"}
    assert canonical_name("title") == "T"
    assert canonical_name("emailAddress") == "E"
    assert canonical_name("GN") == "givenName"
    assert canonical_name("SN") == "surname"  # RFC 4519: SN is surname, not serialNumber
    assert canonical_name("cn") == "CN"
    assert canonical_name("2.5.4.97") == "organizationIdentifier"
    assert canonical_name("1.2.3.4") == "1.2.3.4"
    assert attribute_type("UID").oid.dotted_string == UID_OID
    assert attribute_type("nonsense") is None


# --- parse_subject --------------------------------------------------------------------------

def test_parse_vnpt_style_subject_keeps_order() -> None:
    assert parse_subject("CN=Bùi Sĩ Tuấn,UID=CCCD:038093015572,ST=Quảng Nam,C=VN") == [
        ("CN", "Bùi Sĩ Tuấn"), ("UID", "CCCD:038093015572"), ("ST", "Quảng Nam"), ("C", "VN")]


def test_parse_quoted_value_with_comma_and_aliases() -> None:
    text = ('UID=CMND:079073009568, UID=MST:0301824642, CN="Nguyễn Văn A, A101.0001 - '
            '003848/HCM-CCHN", title=BS CK II, O=Bệnh viện Quận 11, ST=TP Hồ Chí Minh, '
            'C=VN')
    assert parse_subject(text) == [
        ("UID", "CMND:079073009568"), ("UID", "MST:0301824642"), ("CN", DOCTOR_CN),
        ("T", "BS CK II"), ("O", "Bệnh viện Quận 11"), ("ST", "TP Hồ Chí Minh"),
        ("C", "VN")]


@pytest.mark.parametrize("text,value", [
    (r"CN=Nguyễn Văn A\, A101", "Nguyễn Văn A, A101"),
    (r'CN=say \"xin chào\"', 'say "xin chào"'),
    (r"CN=back\\slash", "back\\slash"),
    (r"CN=\C3\A1 b", "á b"),  # UTF-8 octets as hex escapes
    (r"CN=a\+b", "a+b"),
    (r"CN=  padded  ", "padded"),  # unescaped surrounding spaces are not part of the value
    (r"CN=trailing\ ", "trailing "),  # an escaped one is
    ('CN="quoted \\" inside"', 'quoted " inside'),
    ('CN = "spaced" ', "spaced"),
    ("CN=a=b", "a=b"),
])
def test_parse_escapes_and_quotes(text: str, value: str) -> None:
    assert parse_subject(text) == [("CN", value)]


def test_parse_openssl_slash_form() -> None:
    assert parse_subject("/C=VN/O=Bệnh viện Quận 11/CN=Nguyễn Văn A, BS") == [
        ("C", "VN"), ("O", "Bệnh viện Quận 11"), ("CN", "Nguyễn Văn A, BS")]
    assert parse_subject(r"/CN=A101.0001 - 003848\/HCM-CCHN") == [
        ("CN", "A101.0001 - 003848/HCM-CCHN")]


def test_parse_normalises_to_nfc_and_accepts_oids() -> None:
    decomposed = unicodedata.normalize("NFD", "Nguyễn Thị Hồng Nhung")
    assert decomposed != "Nguyễn Thị Hồng Nhung"
    [(name, value)] = parse_subject(f"CN={decomposed}")
    assert value == "Nguyễn Thị Hồng Nhung" and unicodedata.is_normalized("NFC", value)
    assert parse_subject("2.5.4.97=VATVN-0301824642, 1.3.6.1.4.1.59999.9.1=x") == [
        ("organizationIdentifier", "VATVN-0301824642"), ("1.3.6.1.4.1.59999.9.1", "x")]
    assert parse_subject("   ") == []


@pytest.mark.parametrize("text,message", [
    ("CN", "position 1: expected NAME=VALUE"),
    ("CN=", "position 1: CN has an empty value"),
    ("=x", "position 1: attribute name missing"),
    ("C=VN, XX=1", "position 7: unknown attribute 'XX'"),
    ("CN=a+O=b", "position 5: multi-valued RDNs"),
    ('CN="abc', "position 4: CN: unterminated quoted value"),
    ('CN="a"b', "position 7: CN: unexpected text after the closing quote"),
    ('CN=a"b', "position 5: CN: stray '\"'"),
    ("CN=#0403", "position 4: CN: hex-encoded"),
    (r"CN=a\q", r"position 5: CN: invalid escape '\q'"),
    ("CN=a,", "position 6: expected NAME=VALUE"),
    (r"CN=\C3", "CN: hex escapes do not form UTF-8"),
])
def test_parse_errors_name_the_position(text: str, message: str) -> None:
    with pytest.raises(SubjectError) as info:
        parse_subject(text)
    assert message in str(info.value)


# --- build_name -----------------------------------------------------------------------------

def test_build_name_orders_by_profile_and_encodes_vietnamese_byte_exact() -> None:
    name = build_name(PROFILE, [
        ("UID", "MST:0301824642"), ("UID", "CCCD:079073009568"), ("CN", DOCTOR_CN),
        ("title", "BS CK II"), ("O", "Bệnh viện Quận 11"), ("ST", "TP Hồ Chí Minh"),
        ("SN", "Nguyễn"), ("GN", "Văn A"), ("serialNumber", "PNOVN-079073009568"),
        ("emailAddress", "bs.a@benhvien-q11.example.vn")])
    attributes = der_attributes(name)
    assert [oid for oid, _, _ in attributes] == [
        "2.5.4.6", "2.5.4.8", "2.5.4.10", "2.5.4.12", "2.5.4.42", "2.5.4.4", "2.5.4.3",
        "2.5.4.5", UID_OID, UID_OID, "1.2.840.113549.1.9.1"]
    by_oid = {}
    for oid, tag, contents in attributes:
        by_oid.setdefault(oid, []).append((tag, contents))
    assert by_oid["2.5.4.6"] == [(0x13, b"VN")]  # C filled in, PrintableString
    assert by_oid["2.5.4.3"] == [(0x0C, DOCTOR_CN.encode("utf-8"))]  # UTF8String, exact
    assert by_oid["2.5.4.10"] == [(0x0C, "Bệnh viện Quận 11".encode("utf-8"))]
    assert by_oid["2.5.4.4"] == [(0x0C, "Nguyễn".encode("utf-8"))]
    assert by_oid["2.5.4.5"] == [(0x13, b"PNOVN-079073009568")]  # PrintableString
    assert by_oid["1.2.840.113549.1.9.1"] == [(0x16, b"bs.a@benhvien-q11.example.vn")]  # IA5
    # repeated attributes keep the order they were given in
    assert by_oid[UID_OID] == [(0x0C, b"MST:0301824642"), (0x0C, b"CCCD:079073009568")]
    # one attribute per RDN
    assert all(len(rdn) == 1 for rdn in name.rdns)


def test_build_name_normalises_nfc_and_handles_dc_and_custom_oids() -> None:
    name = build_name(PROFILE, [("CN", unicodedata.normalize("NFD", "Hồng Nhung")),
                                ("UID", "CCCD:025199009534"), ("DC", "benhvien"),
                                ("1.3.6.1.4.1.59999.9.1", "Khoa Nội")])
    assert name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Hồng Nhung"
    attrs = {oid: (tag, contents) for oid, tag, contents in der_attributes(name)}
    assert attrs["0.9.2342.19200300.100.1.25"] == (0x16, b"benhvien")
    assert attrs["1.3.6.1.4.1.59999.9.1"] == (0x0C, "Khoa Nội".encode("utf-8"))


@pytest.mark.parametrize("pairs,message", [
    ([("CN", "A"), ("UID", "CCCD:123")],
     r"profile clinician: UID 'CCCD:123' does not match CCCD:\d{12} | MST:\d{10}(-\d{3})?"),
    ([("UID", "CCCD:079073009568")], "profile clinician: CN is required"),
    ([("CN", "A")], "profile clinician: UID is required"),
    ([("CN", "A"), ("UID", "CCCD:079073009568"), ("UID", "MST:0301824642"),
      ("UID", "CCCD:025199009534")], "profile clinician: UID given 3 times, at most 2"),
    ([("CN", "A"), ("OU", "Khoa"), ("UID", "CCCD:079073009568")],
     "profile clinician: attribute OU is not allowed"),
    ([("CN", "A" * 65), ("UID", "CCCD:079073009568")], "is 65 characters, at most 64"),
    ([("CN", "Bệnh viện Đa khoa Trung ương Cần Thơ - Khoa Hồi sức"),
      ("UID", "CCCD:079073009568")], "is 65 bytes in UTF-8, at most 64"),
    ([("C", "US"), ("CN", "A"), ("UID", "CCCD:079073009568")],
     "profile clinician: C must be 'VN', got 'US'"),
    ([("CN", "A"), ("UID", "CCCD:079073009568"), ("serialNumber", "PNOVN-07907300956ế")],
     "is not a PrintableString"),
    ([("CN", "A"), ("UID", "CCCD:079073009568"), ("E", "bác.sĩ@benhvien.vn")],
     "must be ASCII (IA5String)"),
    ([("CN", " A"), ("UID", "CCCD:079073009568")], "leading or trailing spaces"),
    ([("CN", "A\nB"), ("UID", "CCCD:079073009568")], "control character"),
    ([("CN", ""), ("UID", "CCCD:079073009568")], "profile clinician: CN is empty"),
])
def test_build_name_errors(pairs: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(SubjectError) as info:
        build_name(PROFILE, pairs)
    assert message in str(info.value)


def test_country_must_be_iso_code() -> None:
    profile = Profile("p", Path("x"), subject=(rule("C", "2.5.4.6"), rule("CN", "2.5.4.3")))
    with pytest.raises(SubjectError, match="ISO 3166"):
        build_name(profile, [("C", "vn")])


# --- format_name ----------------------------------------------------------------------------

def test_format_name_is_readable_in_certificate_order() -> None:
    name = build_name(PROFILE, [("CN", DOCTOR_CN), ("UID", "CCCD:079073009568"),
                                ("T", "BS CK II"), ("O", "Bệnh viện Quận 11")])
    assert format_name(name) == ('C=VN, O=Bệnh viện Quận 11, T=BS CK II, '
                                 'CN="Nguyễn Văn A, A101.0001 - 003848/HCM-CCHN", '
                                 'UID=CCCD:079073009568')
    custom = x509.Name([x509.NameAttribute(x509.ObjectIdentifier("1.2.3.4"), 'say "hi"')])
    assert format_name(custom) == '1.2.3.4="say \\"hi\\""'
    multi = x509.Name([x509.RelativeDistinguishedName([
        x509.NameAttribute(NameOID.COMMON_NAME, "a"),
        x509.NameAttribute(NameOID.USER_ID, "b")])])
    assert format_name(multi) in ("CN=a+UID=b", "UID=b+CN=a")


def test_format_then_parse_round_trips_to_the_same_der() -> None:
    name = build_name(PROFILE, [("CN", DOCTOR_CN), ("UID", "MST:0301824642-199"),
                                ("UID", "CCCD:025199009534"), ("O", 'Công ty "A+B"; <1>')])
    again = build_name(PROFILE, parse_subject(format_name(name)))
    assert again.public_bytes() == name.public_bytes()


_VALUE_CHARS = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp"))


@settings(max_examples=200, deadline=None)
@given(st.text(_VALUE_CHARS, min_size=1, max_size=64))
def test_any_cn_round_trips_through_format_and_parse(value: str) -> None:
    value = unicodedata.normalize("NFC", value).strip()
    if not value or len(value) > 64 or len(value.encode("utf-8")) > 64:
        return
    name = build_name(PROFILE, [("CN", value), ("UID", "CCCD:079073009568")])
    assert parse_subject(format_name(name)) == [("C", "VN"), ("CN", value),
                                                ("UID", "CCCD:079073009568")]


# --- purity ---------------------------------------------------------------------------------

def test_subject_profiles_and_hierarchy_import_no_web_db_or_cli_code() -> None:
    code = ("import sys, ca.subject, ca.profiles, ca.hierarchy; "
            "bad = [m for m in ('flask', 'sqlalchemy', 'click', 'werkzeug') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stdout + result.stderr


PLAIN_CASES = [
    "C=VN, O=Bệnh viện Quận 11, CN=Bác sĩ 1, UID=CCCD:079073000001",
    "CN=Bùi Sĩ Tuấn,UID=CCCD:038093015572,C=VN",
    "  cn = a b  ,  title=BS CK II ,o=x<y>;z  ",
    "C=VN, CN=a=b, emailAddress=a@b.vn",
    "C=VN, CN=Nguye\u0302\u0303n",  # decomposed: NFC applies to the value too
    "C=VN,, CN=x", "C=VN, CN=", "C=VN, =x", "C=VN, colour=blue", "C=VN, CN",
    "2.5.4.3=x, C=VN", "C=VN, CN=\tx\t", "C=VN, CN=a , O= b",
]


@pytest.mark.parametrize("text", PLAIN_CASES)
def test_the_plain_split_reads_what_the_parser_reads(text: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """parse_subject splits subjects without escapes or quotes instead of walking them a
    character at a time: the same pairs, or the parser's own error when it refuses."""
    from ca import subject as module

    def parsed() -> object:
        try:
            return module.parse_subject(text)
        except SubjectError as exc:
            return ("error", str(exc))

    fast = parsed()
    monkeypatch.setattr(module, "_plain_pairs", lambda _text: None)
    assert fast == parsed()


def test_a_value_that_starts_with_a_combining_mark_keeps_its_equals_sign() -> None:
    """Found by the round trip above: NFC over the whole line made '=' + U+0338 one '≠'."""
    assert parse_subject("C=VN, CN=\u0338 Ngọc, UID=CCCD:079073009568") == [
        ("C", "VN"), ("CN", "\u0338 Ngọc"), ("UID", "CCCD:079073009568")]
    assert parse_subject('CN="\u0338a, b"') == [("CN", "\u0338a, b")]
    assert parse_subject("CN=Ngo\u0323c") == [("CN", "Ngọc")]  # values still NFC
