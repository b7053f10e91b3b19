"""Certificate profiles: YAML data in profiles/, loaded into frozen, validated objects.

The data model below is the contract between the YAML files, issuance (ca/issuance.py) and the
service. Subject conventions (Vietnamese identity prefixes, ETSI attributes) live in the YAML, not
in code, because Circular 28/2025 may change them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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

    def allows_key(self, spec: KeySpec) -> bool:
        return not self.key_algorithms or spec in self.key_algorithms

    def rule(self, name: str) -> SubjectAttributeRule | None:
        for rule in self.subject:
            if rule.name == name:
                return rule
        return None
