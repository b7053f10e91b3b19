"""Subject names: operator text -> checked (attribute, value) pairs -> x509.Name, and back.

Which attributes a certificate may carry, in which order and with which values is profile data
(ca/profiles/, profiles/*.yaml), because Vietnamese conventions (``UID=CCCD:...``,
``UID=MST:...``) and Circular 28/2025 live there. This module only knows the attribute *types*:
short name, OID, ASN.1 string type and upper bound. Values are normalised to Unicode NFC and
encoded as UTF8String unless the type demands PrintableString (C, serialNumber) or IA5String
(E, DC), so a name with diacritics such as ``Nguyễn Thị Hồng Nhung`` round-trips byte for
byte.

The rules come in through two Protocols, :class:`AttributeRule` and :class:`SubjectRules`,
which ca.profiles' frozen dataclasses satisfy: profiles depend on this module, never the other
way round (not even for type checking), so the two cannot grow an import cycle.

Pure: imports no flask, sqlalchemy or click.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Protocol, Sequence

from cryptography import x509
from cryptography.x509.name import _ASN1Type  # the only way to choose a string type
from cryptography.x509.oid import NameOID, ObjectIdentifier

from ca.errors import SubjectError

__all__ = [
    "ATTRIBUTES", "AttributeRule", "AttributeType", "SubjectRules", "attribute_type",
    "attribute_type_for_oid", "build_name", "canonical_name", "check_value", "format_name",
    "parse_subject",
]


class AttributeRule(Protocol):
    """What this module reads of one subject rule (ca.profiles.SubjectAttributeRule)."""

    @property
    def name(self) -> str: ...
    @property
    def oid(self) -> str: ...
    @property
    def required(self) -> bool: ...
    @property
    def max_count(self) -> int: ...
    @property
    def value(self) -> str | None: ...
    @property
    def patterns(self) -> Sequence[str]: ...
    @property
    def max_length(self) -> int: ...


class SubjectRules(Protocol):
    """What this module reads of a profile (ca.profiles.Profile): its name and subject rules."""

    @property
    def name(self) -> str: ...
    @property
    def subject(self) -> Sequence[AttributeRule]: ...


@dataclass(frozen=True)
class AttributeType:
    """One X.520 / RFC 4519 attribute type as tincay names and encodes it.

    ``max_length`` is the RFC 5280 Appendix A upper bound (characters), capped at 128 where the
    standard allows more; a profile may lower it, never raise it.
    """

    name: str
    oid: ObjectIdentifier
    string_type: _ASN1Type
    max_length: int
    aliases: tuple[str, ...] = ()


_UTF8, _PRINTABLE, _IA5 = _ASN1Type.UTF8String, _ASN1Type.PrintableString, _ASN1Type.IA5String

ATTRIBUTES: tuple[AttributeType, ...] = (
    AttributeType("C", NameOID.COUNTRY_NAME, _PRINTABLE, 2, ("countryName",)),
    AttributeType("ST", NameOID.STATE_OR_PROVINCE_NAME, _UTF8, 128, ("stateOrProvinceName", "S")),
    AttributeType("L", NameOID.LOCALITY_NAME, _UTF8, 128, ("localityName",)),
    AttributeType("O", NameOID.ORGANIZATION_NAME, _UTF8, 64, ("organizationName",)),
    AttributeType("OU", NameOID.ORGANIZATIONAL_UNIT_NAME, _UTF8, 64,
                  ("organizationalUnitName",)),
    AttributeType("T", NameOID.TITLE, _UTF8, 64, ("title",)),
    AttributeType("CN", NameOID.COMMON_NAME, _UTF8, 64, ("commonName",)),
    AttributeType("UID", NameOID.USER_ID, _UTF8, 128, ("userId",)),
    AttributeType("E", NameOID.EMAIL_ADDRESS, _IA5, 128, ("emailAddress",)),
    # RFC 4519: SN is *surname*, not serialNumber (a classic mix-up).
    AttributeType("givenName", NameOID.GIVEN_NAME, _UTF8, 64, ("GN", "G")),
    AttributeType("surname", NameOID.SURNAME, _UTF8, 64, ("SN",)),
    AttributeType("serialNumber", NameOID.SERIAL_NUMBER, _PRINTABLE, 64, ()),
    AttributeType("organizationIdentifier", NameOID.ORGANIZATION_IDENTIFIER, _UTF8, 64, ()),
    AttributeType("street", NameOID.STREET_ADDRESS, _UTF8, 128, ("streetAddress",)),
    AttributeType("postalCode", NameOID.POSTAL_CODE, _UTF8, 40, ()),
    AttributeType("DC", NameOID.DOMAIN_COMPONENT, _IA5, 63, ("domainComponent",)),
    AttributeType("pseudonym", NameOID.PSEUDONYM, _UTF8, 128, ()),
)

_BY_KEY: dict[str, AttributeType] = {}
for _attr in ATTRIBUTES:
    for _key in (_attr.name, *_attr.aliases):
        _BY_KEY[_key.lower()] = _attr
_BY_OID: dict[str, AttributeType] = {a.oid.dotted_string: a for a in ATTRIBUTES}

_OID_RE = re.compile(r"[0-2](\.(0|[1-9]\d*))+")
_PRINTABLE_RE = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]*")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CN_MAX_OCTETS = 64  # cryptography refuses longer CNs (it counts UTF-8 bytes, not characters)


def attribute_type(name: str) -> AttributeType | None:
    """The attribute type a short name, alias (case-insensitive) or dotted OID stands for."""
    found = _BY_KEY.get(name.strip().lower())
    if found is None and _OID_RE.fullmatch(name.strip()):
        found = _BY_OID.get(name.strip())
    return found


def attribute_type_for_oid(oid: ObjectIdentifier | str) -> AttributeType | None:
    dotted = oid if isinstance(oid, str) else oid.dotted_string
    return _BY_OID.get(dotted)


def canonical_name(name: str) -> str:
    """tincay's one spelling of an attribute (``title`` -> ``T``, ``SN`` -> ``surname``).

    A dotted OID of an unknown type stays a dotted OID; an unknown word is returned stripped so
    the caller can report it.
    """
    found = attribute_type(name)
    return found.name if found is not None else name.strip()


# --- parsing operator input -----------------------------------------------------------------

_SPECIALS = set(',+"\\<>;=# /')


@dataclass
class _Cursor:
    text: str
    pos: int = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_spaces(self) -> None:
        while self.peek() == " ":
            self.pos += 1


def parse_subject(text: str) -> list[tuple[str, str]]:
    """Parse ``CN=Bùi Sĩ Tuấn,UID=CCCD:038093015572,C=VN`` into ordered (name, value) pairs.

    Accepts RFC 4514 escapes (``\\,``, ``\\"``, ``\\C3\\A9``), double-quoted values (``CN="Nguyễn
    Văn A, A101.0001"``) and the OpenSSL ``/C=VN/O=.../CN=...`` form. Names come back canonical
    (``title`` -> ``T``); values NFC-normalised. Order is kept as typed: the profile, not the
    operator, decides the order in the certificate (:func:`build_name`). Blank text gives [].
    Multi-valued RDNs (unescaped ``+``) and ``#hex`` values are refused: no tincay profile uses
    them, and silently taking ``+`` as part of a value would hide a typo.
    """
    if not isinstance(text, str):
        raise TypeError("parse_subject expects a str")
    # each value is NFC-normalised on its own (_plain_pairs, _decode): the whole line would
    # compose a value's leading combining mark with the '=' before it (CN=\u0338 -> 'CN≠')
    text = _strip_unescaped(text)
    if not text:
        return []
    plain = _plain_pairs(text)
    if plain is not None:
        return plain
    separator = "/" if text.startswith("/") else ","
    cursor = _Cursor(text, 1 if separator == "/" else 0)
    pairs: list[tuple[str, str]] = []
    while True:
        pairs.append(_parse_pair(cursor, separator))
        cursor.skip_spaces()
        if cursor.peek() == "":
            return pairs
        if cursor.peek() == "+":
            raise SubjectError(f"position {cursor.pos + 1}: multi-valued RDNs ('+') are not "
                               "supported; write '\\+' for a plus sign in a value")
        if cursor.peek() != separator:  # pragma: no cover - _parse_value stops only there
            raise SubjectError(f"position {cursor.pos + 1}: expected {separator!r}")
        cursor.pos += 1


_NOT_PLAIN = frozenset('\\"+#/')


def _plain_pairs(text: str) -> list[tuple[str, str]] | None:
    """The pairs of a subject without escapes, quotes, ``+``, ``#`` or ``/`` (what a batch
    file's rows are, nearly always) by splitting, as the parser below would read them; None
    for anything else, and for any text the parser refuses (it words the error). The parser
    walks a character at a time: 60 us of a batch row's CPU."""
    if not _NOT_PLAIN.isdisjoint(text):
        return None
    pairs = []
    for part in text.split(","):
        raw_name, equals, value = part.partition("=")
        raw_name, value = raw_name.strip(), value.strip(" ")
        if not equals or not raw_name or not value or attribute_type(raw_name) is None:
            return None
        pairs.append((canonical_name(raw_name), unicodedata.normalize("NFC", value)))
    return pairs


def _strip_unescaped(text: str) -> str:
    """Strip surrounding whitespace, but keep a trailing space escaped as ``\\ ``."""
    text = text.lstrip()
    stripped = text.rstrip()
    backslashes = len(stripped) - len(stripped.rstrip("\\"))
    if backslashes % 2 and len(stripped) < len(text):
        return stripped + " "
    return stripped


def _parse_pair(cursor: _Cursor, separator: str) -> tuple[str, str]:
    cursor.skip_spaces()
    start = cursor.pos
    while cursor.peek() not in ("=", separator, "") and cursor.peek() != "+":
        cursor.pos += 1
    raw_name = cursor.text[start:cursor.pos].strip()
    if cursor.peek() != "=":
        shown = raw_name or cursor.text[start:cursor.pos + 1]
        raise SubjectError(f"position {start + 1}: expected NAME=VALUE, got {shown!r}")
    if not raw_name:
        raise SubjectError(f"position {start + 1}: attribute name missing before '='")
    if attribute_type(raw_name) is None and not _OID_RE.fullmatch(raw_name):
        known = ", ".join(a.name for a in ATTRIBUTES)
        raise SubjectError(f"position {start + 1}: unknown attribute {raw_name!r} "
                           f"(known: {known}, or a dotted OID)")
    name = canonical_name(raw_name)
    cursor.pos += 1
    value = _parse_value(cursor, separator, name)
    if value == "":
        raise SubjectError(f"position {start + 1}: {name} has an empty value")
    return name, value


def _parse_value(cursor: _Cursor, separator: str, name: str) -> str:
    cursor.skip_spaces()
    if cursor.peek() == "#":
        raise SubjectError(f"position {cursor.pos + 1}: {name}: hex-encoded (#...) values are "
                           "not supported; type the text")
    if cursor.peek() == '"':
        return _parse_quoted(cursor, separator, name)
    out = bytearray()
    significant = 0  # length of out up to the last byte that is not an unescaped space
    while cursor.peek() not in (separator, "", "+"):
        char = cursor.peek()
        if char == "\\":
            out += _parse_escape(cursor, name)
            significant = len(out)
            continue
        if char == '"':
            raise SubjectError(f"position {cursor.pos + 1}: {name}: stray '\"' inside a value; "
                               "quote the whole value or write '\\\"'")
        out += char.encode("utf-8")
        cursor.pos += 1
        if char != " ":
            significant = len(out)
    return _decode(bytes(out[:significant]), cursor, name)


def _parse_quoted(cursor: _Cursor, separator: str, name: str) -> str:
    opening = cursor.pos
    cursor.pos += 1
    out = bytearray()
    while True:
        char = cursor.peek()
        if char == "":
            raise SubjectError(f"position {opening + 1}: {name}: unterminated quoted value")
        if char == '"':
            cursor.pos += 1
            break
        if char == "\\":
            out += _parse_escape(cursor, name)
            continue
        out += char.encode("utf-8")
        cursor.pos += 1
    cursor.skip_spaces()
    if cursor.peek() not in (separator, "", "+"):
        raise SubjectError(f"position {cursor.pos + 1}: {name}: unexpected text after the "
                           "closing quote")
    return _decode(bytes(out), cursor, name)


def _parse_escape(cursor: _Cursor, name: str) -> bytes:
    """``\\`` + a special character, or ``\\`` + two hex digits (one UTF-8 octet)."""
    text, pos = cursor.text, cursor.pos
    pair = text[pos + 1:pos + 3]
    if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
        cursor.pos += 3
        return bytes.fromhex(pair)
    nxt = text[pos + 1:pos + 2]
    if nxt and nxt in _SPECIALS:
        cursor.pos += 2
        return nxt.encode("utf-8")
    raise SubjectError(f"position {pos + 1}: {name}: invalid escape '\\{nxt}' (escape one of "
                       f"{''.join(sorted(_SPECIALS))} or write two hex digits)")


def _decode(raw: bytes, cursor: _Cursor, name: str) -> str:
    try:
        return unicodedata.normalize("NFC", raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SubjectError(f"position {cursor.pos}: {name}: hex escapes do not form UTF-8"
                           ) from None


# --- checking against a profile and building the Name ---------------------------------------

@functools.lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _rule_type(rule: AttributeRule) -> AttributeType:
    """The attribute type behind a rule; custom OIDs (profile-defined) are UTF8String."""
    known = attribute_type_for_oid(rule.oid)
    if known is not None:
        return known
    return AttributeType(rule.name, ObjectIdentifier(rule.oid), _UTF8, rule.max_length)


def _find_rule(profile: SubjectRules, name: str) -> AttributeRule | None:
    canonical = canonical_name(name)
    known = attribute_type(name)
    for rule in profile.subject:
        if rule.name == canonical or (known is not None and rule.oid == known.oid.dotted_string) \
                or rule.oid == canonical:
            return rule
    return None


def build_name(profile: SubjectRules, pairs: Sequence[tuple[str, str]]) -> x509.Name:
    """The certificate subject for ``pairs`` under ``profile``'s subject rules.

    Refuses attributes the profile does not list, missing required ones, too many values, values
    that are too long, fail every pattern (full match), differ from a fixed value, or cannot be
    encoded in the attribute's string type. Fixed values are filled in when omitted. RDNs come
    in the profile's rule order, repeated attributes in the order given, one attribute per RDN.
    """
    given: dict[str, list[str]] = {}
    for name, value in pairs:
        if not isinstance(name, str) or not isinstance(value, str):
            raise SubjectError(f"profile {profile.name}: subject entries must be (name, value) "
                               f"strings, got {(name, value)!r}")
        rule = _find_rule(profile, name)
        if rule is None:
            allowed = ", ".join(r.name for r in profile.subject) or "none"
            raise SubjectError(f"profile {profile.name}: attribute {canonical_name(name)} is not "
                               f"allowed (allowed: {allowed})")
        given.setdefault(rule.name, []).append(unicodedata.normalize("NFC", value))
    attributes: list[x509.NameAttribute] = []
    for rule in profile.subject:
        values = given.get(rule.name, [])
        if not values and rule.value is not None:
            values = [rule.value]
        _check_count(profile, rule, values)
        attr_type = _rule_type(rule)
        for value in values:
            check_value(profile.name, rule, value)
            attributes.append(x509.NameAttribute(attr_type.oid, value,
                                                  _type=attr_type.string_type))
    return x509.Name(attributes)


def _check_count(profile: SubjectRules, rule: AttributeRule, values: list[str]) -> None:
    if rule.required and not values:
        raise SubjectError(f"profile {profile.name}: {rule.name} is required")
    if len(values) > rule.max_count:
        raise SubjectError(f"profile {profile.name}: {rule.name} given {len(values)} times, at "
                           f"most {rule.max_count} allowed")


def check_value(profile_name: str, rule: AttributeRule, value: str) -> None:
    """One value against its rule and its attribute type; SubjectError names both.

    Public so the profile loader can check a rule's fixed ``value`` with the same code.
    """
    where = f"profile {profile_name}: {rule.name}"
    if value == "":
        raise SubjectError(f"{where} is empty")
    if value != value.strip():
        raise SubjectError(f"{where} {value!r} has leading or trailing spaces")
    if _CONTROL_RE.search(value):
        raise SubjectError(f"{where} {value!r} contains a control character")
    if rule.value is not None and value != rule.value:
        raise SubjectError(f"{where} must be {rule.value!r}, got {value!r}")
    attr_type = _rule_type(rule)
    limit = min(rule.max_length, attr_type.max_length)
    if len(value) > limit:
        raise SubjectError(f"{where} {value!r} is {len(value)} characters, at most {limit}")
    octets = len(value.encode("utf-8"))
    if attr_type.name == "CN" and octets > _CN_MAX_OCTETS:
        raise SubjectError(f"{where} {value!r} is {octets} bytes in UTF-8, at most "
                           f"{_CN_MAX_OCTETS} (cryptography counts ub-common-name in bytes; "
                           "diacritics take 2-3 bytes each)")
    if attr_type.string_type == _PRINTABLE and not _PRINTABLE_RE.fullmatch(value):
        raise SubjectError(f"{where} {value!r} is not a PrintableString (A-Z a-z 0-9 space "
                           "' ( ) + , - . / : = ?)")
    if attr_type.string_type == _IA5 and not value.isascii():
        raise SubjectError(f"{where} {value!r} must be ASCII (IA5String)")
    if attr_type.name == "C" and not re.fullmatch(r"[A-Z]{2}", value):
        raise SubjectError(f"{where} {value!r} is not an ISO 3166 alpha-2 code")
    if rule.patterns and not any(_compiled(p).fullmatch(value) for p in rule.patterns):
        shown = " | ".join(rule.patterns)
        raise SubjectError(f"{where} {value!r} does not match {shown}")


# --- display --------------------------------------------------------------------------------

_QUOTE_TRIGGERS = set(',+"\\<>;=')


def _display_value(value: str) -> str:
    """The value as typed back into :func:`parse_subject`: quoted only when it must be."""
    if value and (set(value) & _QUOTE_TRIGGERS or value[0] in "# " or value[-1] == " "):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def format_name(name: x509.Name) -> str:
    """``C=VN, O=Bệnh viện Quận 11, CN="Nguyễn Văn A, A101"``: one readable line.

    Certificate order (not RFC 4514's reversed order), tincay's short names (UID, T, givenName),
    UTF-8 kept as text. Quoted values make the output parse back with :func:`parse_subject`.
    """
    rdns = []
    for rdn in name.rdns:
        parts = []
        for attribute in rdn:
            known = attribute_type_for_oid(attribute.oid)
            label = known.name if known is not None else attribute.oid.dotted_string
            value = attribute.value if isinstance(attribute.value, str) \
                else "#" + attribute.value.hex()
            parts.append(f"{label}={_display_value(value)}")
        rdns.append("+".join(parts))
    return ", ".join(rdns)
