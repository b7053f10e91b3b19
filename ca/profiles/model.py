"""The profile domain objects issuance reads: frozen dataclasses, and their names.

These are deliberately not pydantic models. The YAML input is described and validated by
:mod:`ca.profiles.schema`; what comes out is plain frozen dataclasses, because issuance reads a
profile's attributes for every certificate (plain attribute access, no validation on
the hot path), tests derive variants with ``dataclasses.replace``, and equality is field-wise.

Pure: imports no flask, sqlalchemy or click.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ca.keys.base import KeySpec

__all__ = ["BasicConstraintsRule", "EKU_NAMES", "HASHES", "KEY_USAGE_NAMES", "PolicyRule",
           "Profile", "QC_TYPES", "QcStatementsRule", "RSA_PADDINGS", "SAN_POLICIES",
           "SEMANTICS", "SignatureRule", "SubjectAttributeRule", "ValidityRule",
           "profile_as_dict"]

KEY_USAGE_NAMES = ("digitalSignature", "nonRepudiation", "keyEncipherment", "dataEncipherment",
                   "keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly")
KEY_USAGE_ALIASES = {"contentCommitment": "nonRepudiation"}  # X.509 (2008) name of the bit
EKU_NAMES = {
    "serverAuth": "1.3.6.1.5.5.7.3.1", "clientAuth": "1.3.6.1.5.5.7.3.2",
    "codeSigning": "1.3.6.1.5.5.7.3.3", "emailProtection": "1.3.6.1.5.5.7.3.4",
    "timeStamping": "1.3.6.1.5.5.7.3.8", "OCSPSigning": "1.3.6.1.5.5.7.3.9",
}
EKU_BY_OID = {oid: name for name, oid in EKU_NAMES.items()}
HASHES = ("sha256", "sha384", "sha512")
RSA_PADDINGS = ("pkcs1v15", "pss")
SAN_POLICIES = ("forbidden", "optional", "required")
QC_TYPES = ("esign", "eseal", "web")
SEMANTICS = ("natural", "legal")


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
        "subject": [rule_as_dict(rule) for rule in profile.subject],
        "key_algorithms": [str(spec) for spec in profile.key_algorithms],
        "signature": {"hash": profile.signature.hash,
                      "rsa_padding": profile.signature.rsa_padding},
        "validity": {"default_days": profile.validity.default_days,
                     "max_days": profile.validity.max_days},
        "key_usage": [n for n in KEY_USAGE_NAMES if n in profile.key_usage]
                     + sorted(set(profile.key_usage) - set(KEY_USAGE_NAMES)),
        "key_usage_critical": profile.key_usage_critical,
        "extended_key_usage": [EKU_BY_OID.get(oid, oid) for oid in profile.extended_key_usage],
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


def rule_as_dict(rule: SubjectAttributeRule) -> dict[str, Any]:
    """One subject rule in the YAML schema, every key spelt out."""
    return {"name": rule.name, "oid": rule.oid, "required": rule.required,
            "max_count": rule.max_count, "value": rule.value, "patterns": list(rule.patterns),
            "max_length": rule.max_length}


def _qc_as_dict(rule: QcStatementsRule) -> dict[str, Any]:
    return {"compliance": rule.compliance, "sscd": rule.sscd, "qc_type": rule.qc_type,
            "pds": [{"url": url, "language": language} for url, language in rule.pds],
            "legislation": list(rule.legislation), "semantics": rule.semantics}
