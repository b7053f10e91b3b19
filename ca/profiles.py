"""Certificate profiles: YAML data in profiles/, loaded into frozen, validated objects.

The data model below is the contract between the YAML files, issuance (ca/issuance.py) and the
service. Subject conventions (Vietnamese identity prefixes, ETSI attributes) live in the YAML, not
in code, because Circular 28/2025 may change them.

YAML schema (one profile per ``profiles/<name>.yaml``; every key but ``name`` optional, unknown
keys are errors)::

    name: clinician                 # must equal the file stem
    description: text
    extends: person-base            # inherit from another profile of the same directory
    abstract: false                 # true: a base for extends only, never issued from
    subject:                        # order = RDN order in the certificate
      - {name: C, required: true, value: VN}
      - {name: UID, required: true, max_count: 2, patterns: ['CCCD:\\d{12}', 'MST:\\d{10}']}
      - {name: CN, required: true, max_length: 64}
      # keys: name, oid (only for attributes ca/subject.py does not know), required, max_count,
      #       value (fixed; filled in when omitted), patterns (full-match regexes), max_length
    subject_remove: [OU]            # with extends: drop inherited attributes
    key_algorithms: [rsa-2048, ec-p256]       # KeySpec.parse syntax; required (non-abstract)
    signature: {hash: sha256, rsa_padding: pkcs1v15}   # sha256|sha384|sha512, pkcs1v15|pss
    validity: {default_days: 365, max_days: 1096}      # required (non-abstract)
    key_usage: [nonRepudiation]     # RFC 5280 names; required (non-abstract)
    key_usage_critical: true
    extended_key_usage: [serverAuth]   # names (serverAuth, clientAuth, codeSigning,
    extended_key_usage_critical: false #  emailProtection, timeStamping, OCSPSigning) or OIDs
    basic_constraints: {ca: true, path_length: 0, critical: true}   # omit for end entities
    policies: [{oid: 1.3.6.1.4.1.59999.1.1, cps_uri: 'https://...', user_notice: text}]
    authority_info_access: true     # OCSP + caIssuers
    crl_distribution_point: true
    freshest_crl: false
    email_san: forbidden            # forbidden | optional | required
    dns_san: forbidden
    qc_statements: {compliance: true, sscd: true, qc_type: esign,
                    pds: [{url: 'https://...', language: en}], legislation: [VN],
                    semantics: natural}
    ocsp_nocheck: false
    self_signed: false

Inheritance (``extends``): the child starts from the parent's *resolved* profile. ``name``,
``description``, ``abstract`` and ``extends`` are never inherited. Every other top-level key the
child gives replaces the parent's value wholesale (``validity: {max_days: 90}`` alone is an
error, not a partial override), except ``subject``: a child entry whose attribute the parent has
overrides that entry key by key, in the parent's position (so ``{name: serialNumber, required:
true}`` just makes it required); entries for new attributes are appended after the inherited
ones; ``subject_remove`` drops inherited attributes. Cycles and missing parents are errors.

Abstract profiles load and validate like others (minus the required keys), are listed by
:meth:`ProfileSet.abstract_names`, and are refused by :meth:`ProfileSet.get` unless asked for
with ``allow_abstract=True``; ``names()``, iteration, ``in`` and ``len`` see concrete profiles
only, because those are what an operator can issue from.

Every loading error is a :class:`ProfileError` naming the file, the profile and the field path,
e.g. ``profiles/clinician.yaml: profile clinician: subject[2].patterns[0]: invalid regex ...``.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import yaml

from ca import subject as subject_types
from ca.errors import ProfileError, SubjectError, UnsupportedKeyError
from ca.keys.base import KeySpec


@dataclass(frozen=True)
class SubjectAttributeRule:
    """One subject attribute the profile allows.

    ``name`` is the short name used on the command line (C, ST, L, O, OU, T, CN, UID, E,
    givenName, surname, serialNumber, organizationIdentifier, street, postalCode, title ...).
    ``patterns``: the value must fully match one of them (empty: anything). ``value``: fixed, and
    filled in when the operator omits it. ``max_count`` > 1 lets UID appear twice (MST: and CCCD:).
    """

    name: str
    oid: str
    required: bool = False
    max_count: int = 1
    value: str | None = None
    patterns: tuple[str, ...] = ()
    max_length: int = 128


@dataclass(frozen=True)
class ValidityRule:
    default_days: int
    max_days: int


@dataclass(frozen=True)
class SignatureRule:
    """How the issuer signs certificates of this profile: hash and, for RSA issuers, padding."""

    hash: str = "sha256"  # sha256 | sha384 | sha512
    rsa_padding: str = "pkcs1v15"  # pkcs1v15 | pss


@dataclass(frozen=True)
class BasicConstraintsRule:
    ca: bool = False
    path_length: int | None = None
    critical: bool = True


@dataclass(frozen=True)
class PolicyRule:
    oid: str
    cps_uri: str | None = None
    user_notice: str | None = None


@dataclass(frozen=True)
class QcStatementsRule:
    """ETSI EN 319 412-5 QC statements (and the 319 412-1 semantics identifier)."""

    compliance: bool = True
    sscd: bool = False
    qc_type: str | None = None  # esign | eseal | web
    pds: tuple[tuple[str, str], ...] = ()  # (https URL, language)
    legislation: tuple[str, ...] = ()  # country codes, e.g. ("VN",)
    semantics: str | None = None  # natural | legal


@dataclass(frozen=True)
class Profile:
    name: str
    source: Path
    description: str = ""
    subject: tuple[SubjectAttributeRule, ...] = ()
    key_algorithms: tuple[KeySpec, ...] = ()
    signature: SignatureRule = field(default_factory=SignatureRule)
    validity: ValidityRule = field(default_factory=lambda: ValidityRule(365, 365))
    key_usage: frozenset[str] = frozenset()  # RFC 5280 names: digitalSignature, nonRepudiation,
    #   keyEncipherment, dataEncipherment, keyAgreement, keyCertSign, cRLSign
    key_usage_critical: bool = True
    extended_key_usage: tuple[str, ...] = ()  # dotted OIDs
    extended_key_usage_critical: bool = False
    basic_constraints: BasicConstraintsRule | None = None
    policies: tuple[PolicyRule, ...] = ()
    authority_info_access: bool = True  # OCSP + caIssuers URLs from the public base URL
    crl_distribution_point: bool = True
    freshest_crl: bool = False
    email_san: str = "forbidden"  # forbidden | optional | required
    dns_san: str = "forbidden"  # forbidden | optional | required
    qc_statements: QcStatementsRule | None = None
    ocsp_nocheck: bool = False
    self_signed: bool = False
    abstract: bool = False  # a base for ``extends:`` only; ProfileSet.get refuses it for issuance
    extends: str | None = None  # the parent profile's name, for display

    def allows_key(self, spec: KeySpec) -> bool:
        return not self.key_algorithms or spec in self.key_algorithms

    def rule(self, name: str) -> SubjectAttributeRule | None:
        for rule in self.subject:
            if rule.name == name:
                return rule
        return None


# === loading ==================================================================================

KEY_USAGE_NAMES = ("digitalSignature", "nonRepudiation", "keyEncipherment", "dataEncipherment",
                   "keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly")
_KEY_USAGE_ALIASES = {"contentCommitment": "nonRepudiation"}  # X.509 (2008) name of the bit
EKU_NAMES = {
    "serverAuth": "1.3.6.1.5.5.7.3.1", "clientAuth": "1.3.6.1.5.5.7.3.2",
    "codeSigning": "1.3.6.1.5.5.7.3.3", "emailProtection": "1.3.6.1.5.5.7.3.4",
    "timeStamping": "1.3.6.1.5.5.7.3.8", "OCSPSigning": "1.3.6.1.5.5.7.3.9",
}
_EKU_BY_OID = {oid: name for name, oid in EKU_NAMES.items()}
HASHES = ("sha256", "sha384", "sha512")
RSA_PADDINGS = ("pkcs1v15", "pss")
SAN_POLICIES = ("forbidden", "optional", "required")
QC_TYPES = ("esign", "eseal", "web")
SEMANTICS = ("natural", "legal")

_TOP_KEYS = ("name", "description", "extends", "abstract", "subject", "subject_remove",
             "key_algorithms", "signature", "validity", "key_usage", "key_usage_critical",
             "extended_key_usage", "extended_key_usage_critical", "basic_constraints", "policies",
             "authority_info_access", "crl_distribution_point", "freshest_crl", "email_san",
             "dns_san", "qc_statements", "ocsp_nocheck", "self_signed")
_NOT_INHERITED = ("name", "description", "extends", "abstract", "subject_remove")
_REQUIRED = ("subject", "key_algorithms", "validity", "key_usage")  # for concrete profiles
_SUBJECT_KEYS = ("name", "oid", "required", "max_count", "value", "patterns", "max_length")
_OID_RE = re.compile(r"[0-2](\.(0|[1-9]\d*))+")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")


@dataclass(frozen=True)
class _Where:
    """File and profile an error belongs to; builds the ``file: profile x: path: msg`` message."""

    source: Path | str
    profile: str | None = None

    def error(self, path: str, message: str) -> ProfileError:
        parts = [str(self.source)]
        if self.profile:
            parts.append(f"profile {self.profile}")
        if path:
            parts.append(path)
        return ProfileError(": ".join(parts) + ": " + message)


# --- typed accessors: each names the field path on failure ----------------------------------

def _type_name(value: object) -> str:
    return {type(None): "null", bool: "a boolean", int: "an integer", float: "a number",
            str: "a string", list: "a list", dict: "a mapping"}.get(type(value),
                                                                  type(value).__name__)


def _str(where: _Where, path: str, value: object, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise where.error(path, f"expected a string, got {_type_name(value)} {value!r}")
    if not empty and not value.strip():
        raise where.error(path, "must not be empty")
    return value


def _opt_str(where: _Where, path: str, value: object) -> str | None:
    return None if value is None else _str(where, path, value)


def _bool(where: _Where, path: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise where.error(path, f"expected true or false, got {_type_name(value)} {value!r}")
    return value


def _int(where: _Where, path: str, value: object, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.error(path, f"expected an integer, got {_type_name(value)} {value!r}")
    if value < minimum:
        raise where.error(path, f"must be at least {minimum}, got {value}")
    return value


def _list(where: _Where, path: str, value: object) -> list:
    if not isinstance(value, list):
        raise where.error(path, f"expected a list, got {_type_name(value)} {value!r}")
    return value


def _str_list(where: _Where, path: str, value: object) -> list[str]:
    return [_str(where, f"{path}[{i}]", item) for i, item in enumerate(_list(where, path, value))]


def _choice(where: _Where, path: str, value: object, choices: tuple[str, ...] | Mapping) -> str:
    text = _str(where, path, value)
    if text not in choices:
        raise where.error(path, f"{text!r} is not one of {', '.join(choices)}"
                                f"{_hint(text, choices)}")
    return text


def _hint(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _mapping(where: _Where, path: str, value: object, allowed: tuple[str, ...],
             required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A mapping with string keys drawn from ``allowed``; a misspelt key gets a suggestion."""
    if not isinstance(value, dict):
        raise where.error(path, f"expected a mapping, got {_type_name(value)} {value!r}")
    for key in value:
        if not isinstance(key, str):
            raise where.error(path, f"key {key!r} is not a string")
        if key not in allowed:
            raise where.error(path, f"unknown key {key!r}{_hint(key, allowed)}; "
                                    f"allowed: {', '.join(allowed)}")
    for key in required:
        if key not in value:
            raise where.error(path, f"missing required key {key!r}")
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _oid(where: _Where, path: str, value: object) -> str:
    text = _str(where, path, value)
    if not _OID_RE.fullmatch(text):
        raise where.error(path, f"{text!r} is not a dotted OID")
    return text


def _url(where: _Where, path: str, value: object, schemes: tuple[str, ...]) -> str:
    text = _str(where, path, value)
    if not re.fullmatch(r"[a-z]+://[^/\s]+(/\S*)?", text) or \
            text.split("://", 1)[0] not in schemes:
        raise where.error(path, f"{text!r} is not an absolute {' or '.join(schemes)} URL")
    return text


# --- field parsers --------------------------------------------------------------------------

def _subject_rule(where: _Where, path: str, entry: object) -> SubjectAttributeRule:
    raw = _mapping(where, path, entry, _SUBJECT_KEYS, required=("name",))
    name = _str(where, _join(path, "name"), raw["name"])
    known = subject_types.attribute_type(name)
    if known is not None:
        oid = known.oid.dotted_string
        if "oid" in raw and _oid(where, _join(path, "oid"), raw["oid"]) != oid:
            raise where.error(_join(path, "oid"), f"{name} is {oid}, not {raw['oid']}")
        name, ceiling = known.name, known.max_length
    elif "oid" in raw:
        oid, ceiling = _oid(where, _join(path, "oid"), raw["oid"]), 128
        if subject_types.attribute_type_for_oid(oid) is not None:
            raise where.error(_join(path, "oid"), f"{oid} is "
                              f"{subject_types.attribute_type_for_oid(oid).name}; use that name")
    else:
        known_names = [a.name for a in subject_types.ATTRIBUTES]
        raise where.error(_join(path, "name"), f"unknown attribute {name!r}"
                          f"{_hint(name, known_names)}; give an oid for a custom attribute")
    max_length = _int(where, _join(path, "max_length"), raw.get("max_length", ceiling), 1)
    if max_length > ceiling:
        raise where.error(_join(path, "max_length"),
                          f"{max_length} exceeds the upper bound {ceiling} of {name}")
    patterns = _str_list(where, _join(path, "patterns"), raw.get("patterns", []))
    for i, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise where.error(f"{path}.patterns[{i}]", f"invalid regex {pattern!r}: {exc}"
                              ) from None
    rule = SubjectAttributeRule(
        name=name, oid=oid, required=_bool(where, _join(path, "required"),
                                           raw.get("required", False)),
        max_count=_int(where, _join(path, "max_count"), raw.get("max_count", 1), 1),
        value=_opt_str(where, _join(path, "value"), raw.get("value")),
        patterns=tuple(patterns), max_length=max_length)
    if rule.value is not None:
        try:
            subject_types.check_value(where.profile or "?", rule, rule.value)
        except SubjectError as exc:
            raise where.error(_join(path, "value"), str(exc)) from None
    return rule


def _key_algorithms(where: _Where, path: str, value: object) -> tuple[KeySpec, ...]:
    specs: list[KeySpec] = []
    for i, text in enumerate(_str_list(where, path, value)):
        try:
            spec = KeySpec.parse(text)
        except UnsupportedKeyError as exc:
            raise where.error(f"{path}[{i}]", str(exc)) from None
        if spec in specs:
            raise where.error(f"{path}[{i}]", f"{spec} listed twice")
        specs.append(spec)
    if not specs:
        raise where.error(path, "must list at least one key algorithm")
    return tuple(specs)


def _signature(where: _Where, path: str, value: object) -> SignatureRule:
    raw = _mapping(where, path, value, ("hash", "rsa_padding"))
    return SignatureRule(_choice(where, _join(path, "hash"), raw.get("hash", "sha256"), HASHES),
                         _choice(where, _join(path, "rsa_padding"),
                                 raw.get("rsa_padding", "pkcs1v15"), RSA_PADDINGS))


def _validity(where: _Where, path: str, value: object) -> ValidityRule:
    raw = _mapping(where, path, value, ("default_days", "max_days"),
                   required=("default_days", "max_days"))
    default = _int(where, _join(path, "default_days"), raw["default_days"], 1)
    maximum = _int(where, _join(path, "max_days"), raw["max_days"], 1)
    if default > maximum:
        raise where.error(_join(path, "default_days"),
                          f"{default} exceeds max_days {maximum}")
    return ValidityRule(default, maximum)


def _key_usage(where: _Where, path: str, value: object) -> frozenset[str]:
    names: set[str] = set()
    for i, text in enumerate(_str_list(where, path, value)):
        text = _KEY_USAGE_ALIASES.get(text, text)
        if text not in KEY_USAGE_NAMES:
            raise where.error(f"{path}[{i}]", f"unknown keyUsage {text!r}"
                              f"{_hint(text, KEY_USAGE_NAMES)}; known: "
                              f"{', '.join(KEY_USAGE_NAMES)}")
        names.add(text)
    if not names:
        raise where.error(path, "must list at least one keyUsage bit")
    return frozenset(names)


def _extended_key_usage(where: _Where, path: str, value: object) -> tuple[str, ...]:
    oids: list[str] = []
    for i, text in enumerate(_str_list(where, path, value)):
        if text in EKU_NAMES:
            oid = EKU_NAMES[text]
        elif _OID_RE.fullmatch(text):
            oid = text
        else:
            raise where.error(f"{path}[{i}]", f"unknown extended key usage {text!r}"
                              f"{_hint(text, EKU_NAMES)}; use one of {', '.join(EKU_NAMES)} or "
                              "a dotted OID")
        if oid in oids:
            raise where.error(f"{path}[{i}]", f"{text} listed twice")
        oids.append(oid)
    return tuple(oids)


def _basic_constraints(where: _Where, path: str, value: object) -> BasicConstraintsRule | None:
    if value is None:
        return None
    raw = _mapping(where, path, value, ("ca", "path_length", "critical"))
    ca = _bool(where, _join(path, "ca"), raw.get("ca", False))
    path_length = raw.get("path_length")
    if path_length is not None:
        path_length = _int(where, _join(path, "path_length"), path_length, 0)
        if not ca:
            raise where.error(_join(path, "path_length"),
                              "pathLenConstraint is only meaningful when ca is true")
    return BasicConstraintsRule(ca, path_length,
                                _bool(where, _join(path, "critical"), raw.get("critical", True)))


def _policies(where: _Where, path: str, value: object) -> tuple[PolicyRule, ...]:
    rules: list[PolicyRule] = []
    for i, entry in enumerate(_list(where, path, value)):
        item = f"{path}[{i}]"
        raw = _mapping(where, item, entry, ("oid", "cps_uri", "user_notice"), required=("oid",))
        cps = raw.get("cps_uri")
        notice = _opt_str(where, _join(item, "user_notice"), raw.get("user_notice"))
        if notice is not None and len(notice) > 200:
            raise where.error(_join(item, "user_notice"),
                              f"{len(notice)} characters; RFC 5280 allows at most 200")
        rule = PolicyRule(_oid(where, _join(item, "oid"), raw["oid"]),
                          None if cps is None else _url(where, _join(item, "cps_uri"), cps,
                                                        ("http", "https")),
                          notice)
        if any(r.oid == rule.oid for r in rules):
            raise where.error(_join(item, "oid"), f"policy {rule.oid} listed twice")
        rules.append(rule)
    return tuple(rules)


def _qc_statements(where: _Where, path: str, value: object) -> QcStatementsRule | None:
    if value is None:
        return None
    raw = _mapping(where, path, value, ("compliance", "sscd", "qc_type", "pds", "legislation",
                                        "semantics"))
    pds = []
    for i, entry in enumerate(_list(where, _join(path, "pds"), raw.get("pds", []))):
        item = f"{path}.pds[{i}]"
        loc = _mapping(where, item, entry, ("url", "language"), required=("url", "language"))
        language = _str(where, _join(item, "language"), loc["language"])
        if not re.fullmatch(r"[a-z]{2}", language):
            raise where.error(_join(item, "language"),
                              f"{language!r} is not a two-letter ISO 639-1 code")
        pds.append((_url(where, _join(item, "url"), loc["url"], ("https",)), language))
    legislation = _str_list(where, _join(path, "legislation"), raw.get("legislation", []))
    for i, country in enumerate(legislation):
        if not re.fullmatch(r"[A-Z]{2}", country):
            raise where.error(f"{path}.legislation[{i}]",
                              f"{country!r} is not an ISO 3166 alpha-2 code")
    qc_type, semantics = raw.get("qc_type"), raw.get("semantics")
    rule = QcStatementsRule(
        compliance=_bool(where, _join(path, "compliance"), raw.get("compliance", True)),
        sscd=_bool(where, _join(path, "sscd"), raw.get("sscd", False)),
        qc_type=None if qc_type is None else _choice(where, _join(path, "qc_type"), qc_type,
                                                     QC_TYPES),
        pds=tuple(pds), legislation=tuple(legislation),
        semantics=None if semantics is None else _choice(where, _join(path, "semantics"),
                                                         semantics, SEMANTICS))
    if not (rule.compliance or rule.sscd or rule.qc_type or rule.pds or rule.legislation
            or rule.semantics):
        raise where.error(path, "states nothing; omit qc_statements instead")
    return rule


def _bool_field(where: _Where, path: str, value: object) -> bool:
    return _bool(where, path, value)


def _san(where: _Where, path: str, value: object) -> str:
    return _choice(where, path, value, SAN_POLICIES)


_FIELDS: dict[str, Callable[[_Where, str, Any], Any]] = {
    "description": lambda w, p, v: _str(w, p, v, empty=True),
    "key_algorithms": _key_algorithms,
    "signature": _signature,
    "validity": _validity,
    "key_usage": _key_usage,
    "key_usage_critical": _bool_field,
    "extended_key_usage": _extended_key_usage,
    "extended_key_usage_critical": _bool_field,
    "basic_constraints": _basic_constraints,
    "policies": _policies,
    "authority_info_access": _bool_field,
    "crl_distribution_point": _bool_field,
    "freshest_crl": _bool_field,
    "email_san": _san,
    "dns_san": _san,
    "qc_statements": _qc_statements,
    "ocsp_nocheck": _bool_field,
    "self_signed": _bool_field,
}


# --- one file -> one Profile ----------------------------------------------------------------

# libyaml's safe loader when PyYAML has it: the pure-Python one took a third of the time a
# throwaway hierarchy needs to start (issue 5's 0.5 s budget); same documents, same types.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path) -> dict[str, Any]:
    """The file's top-level mapping; YAML syntax errors become ProfileErrors naming the file."""
    where = _Where(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise where.error("", f"cannot read: {exc}") from None
    try:
        data = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise where.error("", f"invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise where.error("", f"expected a mapping at the top, got {_type_name(data)}")
    return data


def _profile_name(path: Path, raw: Mapping[str, Any]) -> str:
    where = _Where(path)
    if "name" not in raw:
        raise where.error("", "missing required key 'name'")
    name = _str(where, "name", raw["name"])
    if not _NAME_RE.fullmatch(name):
        raise where.error("name", f"{name!r} must be lower-case letters, digits, '.', '_', '-'")
    if name != path.stem:
        raise where.error("name", f"{name!r} must equal the file name {path.stem!r}")
    return name


def _merge(where: _Where, parent: Profile, inherited: Mapping[str, Any],
           raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """The child's mapping laid over the parent's resolved one (rules in the module docstring).

    Returns the merged top-level mapping and the subject entries paired with the path to report
    errors under (the child's own index where the child wrote the entry).
    """
    merged = {k: v for k, v in inherited.items() if k != "subject"}
    merged.update({k: v for k, v in raw.items() if k != "subject"})
    if "subject" in inherited or "subject" in raw:
        merged["subject"] = True  # marks the key as set; the entries travel separately
    entries: list[tuple[str, dict[str, Any]]] = [
        (f"subject (inherited from {parent.name}) [{i}]", dict(e))
        for i, e in enumerate(inherited.get("subject", []))]
    for i, name in enumerate(_str_list(where, "subject_remove", raw.get("subject_remove", []))):
        canonical = subject_types.canonical_name(name)
        if not any(e["name"] == canonical for _, e in entries):
            raise where.error(f"subject_remove[{i}]",
                              f"{name} is not in the subject of {parent.name}")
        entries = [(p, e) for p, e in entries if e["name"] != canonical]
    for i, entry in enumerate(_list(where, "subject", raw.get("subject", []))):
        path = f"subject[{i}]"
        entry = _mapping(where, path, entry, _SUBJECT_KEYS, required=("name",))
        canonical = subject_types.canonical_name(_str(where, f"{path}.name", entry["name"]))
        for index, (_, old) in enumerate(entries):
            if old["name"] == canonical:
                entries[index] = (path, {**old, **entry, "name": canonical})
                break
        else:
            entries.append((path, {**entry, "name": canonical}))
    return merged, list(entries)


def _build(path: Path, raw: Mapping[str, Any], parent: Profile | None,
           inherited: Mapping[str, Any] | None = None) -> tuple[Profile, dict[str, Any]]:
    """The validated profile, and its resolved mapping (what a child of it inherits).

    The resolved mapping holds only keys set somewhere along the ``extends`` chain, so a
    concrete child of an incomplete abstract base is told which required key nobody set.
    """
    name = _profile_name(path, raw)
    where = _Where(path, name)
    _mapping(where, "", raw, _TOP_KEYS)
    if parent is None:
        if "subject_remove" in raw:
            raise where.error("subject_remove", "only meaningful with extends")
        merged = dict(raw)
        entries = [(f"subject[{i}]", e)
                   for i, e in enumerate(_list(where, "subject", raw.get("subject", [])))]
    else:
        merged, entries = _merge(where, parent, inherited or _inheritable(parent), raw)
    abstract = _bool(where, "abstract", raw.get("abstract", False))
    if not abstract:
        for key in _REQUIRED:
            if key not in merged or (key == "subject" and not entries):
                raise where.error("", f"missing required key {key!r}" + (
                    f" (not set here nor in {parent.name})" if parent else ""))
    fields = {key: parser(where, key, merged[key]) for key, parser in _FIELDS.items()
              if key in merged}
    fields["subject"] = _subject_rules(where, entries)
    profile = Profile(name=name, source=path, abstract=abstract,
                      extends=parent.name if parent else None, **fields)
    _check_consistency(where, profile, merged)
    resolved = {k: v for k, v in merged.items() if k not in _NOT_INHERITED and k != "subject"}
    if "subject" in merged:
        resolved["subject"] = [_rule_as_dict(rule) for rule in profile.subject]
    return profile, resolved


def _inheritable(profile: Profile) -> dict[str, Any]:
    """What a child inherits from a profile known only as an object (every field counts)."""
    return {k: v for k, v in profile_as_dict(profile).items()
            if k in _TOP_KEYS and k not in _NOT_INHERITED}


def _subject_rules(where: _Where, entries: list[tuple[str, Any]]
                   ) -> tuple[SubjectAttributeRule, ...]:
    rules: list[SubjectAttributeRule] = []
    for path, entry in entries:
        rule = _subject_rule(where, path, entry)
        if any(r.name == rule.name for r in rules):
            raise where.error(f"{path}.name", f"{rule.name} appears twice; use max_count")
        rules.append(rule)
    return tuple(rules)


def _check_consistency(where: _Where, profile: Profile, merged: Mapping[str, Any]) -> None:
    """Rules that involve more than one field."""
    is_ca = profile.basic_constraints is not None and profile.basic_constraints.ca
    if profile.self_signed and not is_ca:
        raise where.error("self_signed", "a self-signed profile must have basic_constraints "
                                         "ca: true")
    if "keyCertSign" in profile.key_usage and not is_ca:
        raise where.error("key_usage", "keyCertSign needs basic_constraints ca: true")
    if is_ca and "key_usage" in merged and "keyCertSign" not in profile.key_usage:
        raise where.error("key_usage", "a CA profile needs keyCertSign")
    if profile.ocsp_nocheck and EKU_NAMES["OCSPSigning"] not in profile.extended_key_usage:
        raise where.error("ocsp_nocheck", "id-pkix-ocsp-nocheck belongs on OCSP responder "
                                          "certificates (extended_key_usage: [OCSPSigning])")
    if profile.extended_key_usage_critical and not profile.extended_key_usage:
        raise where.error("extended_key_usage_critical", "no extended_key_usage to mark")


# --- the set of profiles --------------------------------------------------------------------

class ProfileSet:
    """The loaded profiles by name. Concrete profiles are what it lists, iterates and counts.

    Abstract ones (bases for ``extends:``) are kept for ``get(name, allow_abstract=True)`` and
    :func:`check_profile_file`, never handed out for issuance by default.
    """

    def __init__(self, profiles: Mapping[str, Profile] | list[Profile] | tuple[Profile, ...],
                 *, _resolved: Mapping[str, Mapping[str, Any]] | None = None):
        items = profiles.values() if isinstance(profiles, Mapping) else profiles
        self._profiles: dict[str, Profile] = {p.name: p for p in items}
        self._resolved = dict(_resolved or {})  # what children inherit, keyed by name

    def _inherited(self, name: str) -> dict[str, Any]:
        resolved = self._resolved.get(name)
        return dict(resolved) if resolved is not None else _inheritable(self._profiles[name])

    def get(self, name: str, *, allow_abstract: bool = False) -> Profile:
        """The profile called ``name``; ProfileError listing the known names otherwise."""
        profile = self._profiles.get(name)
        if profile is None:
            raise ProfileError(f"no profile {name!r}{_hint(name, self._profiles)}; known: "
                               f"{', '.join(self.names()) or 'none'}")
        if profile.abstract and not allow_abstract:
            raise ProfileError(f"profile {name!r} is abstract (a base for extends:); issue from "
                               f"one of: {', '.join(self.names())}")
        return profile

    def names(self) -> list[str]:
        return sorted(n for n, p in self._profiles.items() if not p.abstract)

    def abstract_names(self) -> list[str]:
        return sorted(n for n, p in self._profiles.items() if p.abstract)

    def __iter__(self) -> Iterator[Profile]:
        return iter([self._profiles[n] for n in self.names()])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._profiles \
            and not self._profiles[name].abstract

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"ProfileSet({', '.join(self.names())})"


def load_profiles(directory: Path) -> ProfileSet:
    """Every ``*.yaml`` directly in ``directory`` (not subfolders), resolved and validated.

    One bad file fails the whole load: a CA must not run with half its profiles.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ProfileError(f"{directory}: not a directory of profiles")
    raws: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in sorted(directory.glob("*.yaml")):
        if path.is_file():
            raw = _read_yaml(path)
            raws[_profile_name(path, raw)] = (path, raw)
    resolved: dict[str, Profile] = {}
    mappings: dict[str, dict[str, Any]] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> Profile:
        if name in resolved:
            return resolved[name]
        path, raw = raws[name]
        parent_name = _extends(path, name, raw)
        parent = None
        if parent_name is not None:
            if parent_name in chain + (name,):
                cycle = " -> ".join(chain[chain.index(parent_name):] + (name, parent_name)) \
                    if parent_name in chain else f"{name} -> {name}"
                raise _Where(path, name).error("extends", f"inheritance cycle {cycle}")
            if parent_name not in raws:
                raise _Where(path, name).error(
                    "extends", f"no profile {parent_name!r}{_hint(parent_name, raws)}; known: "
                               f"{', '.join(sorted(raws))}")
            parent = resolve(parent_name, chain + (name,))
        resolved[name], mappings[name] = _build(
            path, raw, parent, mappings[parent.name] if parent else None)
        return resolved[name]

    for name in raws:
        resolve(name, ())
    return ProfileSet(resolved, _resolved=mappings)


def _extends(path: Path, name: str, raw: Mapping[str, Any]) -> str | None:
    value = raw.get("extends")
    return None if value is None else _str(_Where(path, name), "extends", value)


def check_profile_file(path: Path, base: ProfileSet | None = None) -> Profile:
    """Validate one profile file (``tincay profiles check FILE``); ``extends:`` resolves in base.

    Returns the resolved profile; raises ProfileError like :func:`load_profiles` would.
    """
    path = Path(path)
    raw = _read_yaml(path)
    name = _profile_name(path, raw)
    parent_name = _extends(path, name, raw)
    parent, inherited = None, None
    if parent_name is not None:
        where = _Where(path, name)
        if parent_name == name:
            raise where.error("extends", f"inheritance cycle {name} -> {name}")
        if base is None:
            raise where.error("extends", f"extends {parent_name!r}, but no profiles were given "
                                         "to resolve it against")
        try:
            parent = base.get(parent_name, allow_abstract=True)
        except ProfileError as exc:
            raise where.error("extends", str(exc)) from None
        inherited = base._inherited(parent_name)
    return _build(path, raw, parent, inherited)[0]


# --- back to plain data ---------------------------------------------------------------------

def profile_as_dict(profile: Profile) -> dict[str, Any]:
    """The resolved profile as plain JSON-able data in the YAML schema (``tincay profiles show``).

    ``source`` (where it was loaded from) and ``extends`` (the parent's name) are informative;
    without those two keys the result is itself a valid profile mapping: dumped to
    ``<name>.yaml`` it loads back into an equal profile (a test keeps it so).
    """
    return {
        "name": profile.name,
        "description": profile.description,
        "source": str(profile.source),
        "abstract": profile.abstract,
        "extends": profile.extends,
        "subject": [_rule_as_dict(rule) for rule in profile.subject],
        "key_algorithms": [str(spec) for spec in profile.key_algorithms],
        "signature": {"hash": profile.signature.hash,
                      "rsa_padding": profile.signature.rsa_padding},
        "validity": {"default_days": profile.validity.default_days,
                     "max_days": profile.validity.max_days},
        "key_usage": [n for n in KEY_USAGE_NAMES if n in profile.key_usage]
                     + sorted(set(profile.key_usage) - set(KEY_USAGE_NAMES)),
        "key_usage_critical": profile.key_usage_critical,
        "extended_key_usage": [_EKU_BY_OID.get(oid, oid) for oid in profile.extended_key_usage],
        "extended_key_usage_critical": profile.extended_key_usage_critical,
        "basic_constraints": None if profile.basic_constraints is None else {
            "ca": profile.basic_constraints.ca,
            "path_length": profile.basic_constraints.path_length,
            "critical": profile.basic_constraints.critical},
        "policies": [{"oid": p.oid, "cps_uri": p.cps_uri, "user_notice": p.user_notice}
                     for p in profile.policies],
        "authority_info_access": profile.authority_info_access,
        "crl_distribution_point": profile.crl_distribution_point,
        "freshest_crl": profile.freshest_crl,
        "email_san": profile.email_san,
        "dns_san": profile.dns_san,
        "qc_statements": None if profile.qc_statements is None else _qc_as_dict(
            profile.qc_statements),
        "ocsp_nocheck": profile.ocsp_nocheck,
        "self_signed": profile.self_signed,
    }


def _rule_as_dict(rule: SubjectAttributeRule) -> dict[str, Any]:
    return {"name": rule.name, "oid": rule.oid, "required": rule.required,
            "max_count": rule.max_count, "value": rule.value, "patterns": list(rule.patterns),
            "max_length": rule.max_length}


def _qc_as_dict(rule: QcStatementsRule) -> dict[str, Any]:
    return {"compliance": rule.compliance, "sscd": rule.sscd, "qc_type": rule.qc_type,
            "pds": [{"url": url, "language": language} for url, language in rule.pds],
            "legislation": list(rule.legislation), "semantics": rule.semantics}
