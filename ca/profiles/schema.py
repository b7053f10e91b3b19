"""The profile YAML schema as pydantic models: every key, its type, and the rules it obeys alone.

A model here describes what an operator may write in one ``profiles/<name>.yaml`` (see
:mod:`ca.profiles` for the whole schema). Strict types keep YAML's surprises out (``"365"`` is
not an integer, ``yes please`` is not a boolean); domain validators word their complaints for
the operator through :class:`ca.validation.FieldError`. Rules that need more than one key's
value or the inheritance chain (required keys, subject attribute types, CA consistency) are
the loader's (:mod:`ca.profiles.loader`), because with ``extends:`` they hold only for the
merged profile, not for one file.

Every model converts itself into its domain dataclass (:mod:`ca.profiles.model`) with
``to_rule()``; the dataclasses, not these models, are what issuance reads.

Pure: imports no flask, sqlalchemy or click.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from ca.errors import UnsupportedKeyError
from ca.keys.base import KeySpec
from ca.profiles.model import (EKU_NAMES, HASHES, KEY_USAGE_ALIASES, KEY_USAGE_NAMES, QC_TYPES,
                               RSA_PADDINGS, SAN_POLICIES, SEMANTICS, BasicConstraintsRule,
                               PolicyRule, QcStatementsRule, SignatureRule, ValidityRule)
from ca.validation import FieldError, InputModel, NonBlank, hint

__all__ = ["BasicConstraintsInput", "PolicyInput", "ProfileDocument", "ProfileHeader",
           "QcStatementsInput", "SignatureInput", "SubjectEntryInput", "ValidityInput",
           "domain_value"]

OID_RE = re.compile(r"[0-2](\.(0|[1-9]\d*))+")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")

HashName = Literal["sha256", "sha384", "sha512"]
RsaPadding = Literal["pkcs1v15", "pss"]
SanPolicy = Literal["forbidden", "optional", "required"]
QcType = Literal["esign", "eseal", "web"]
Semantics = Literal["natural", "legal"]
# the Literals spell the names out for type checkers; model.py's tuples are the one truth
assert (get_args(HashName), get_args(RsaPadding), get_args(SanPolicy), get_args(QcType),
        get_args(Semantics)) == (HASHES, RSA_PADDINGS, SAN_POLICIES, QC_TYPES, SEMANTICS)


# --- scalar rules -----------------------------------------------------------------------------

def _dotted_oid(text: str) -> str:
    if not OID_RE.fullmatch(text):
        raise FieldError(f"{text!r} is not a dotted OID")
    return text


def _url(*schemes: str) -> AfterValidator:
    def check(text: str) -> str:
        if not re.fullmatch(r"[a-z]+://[^/\s]+(/\S*)?", text) or \
                text.split("://", 1)[0] not in schemes:
            raise FieldError(f"{text!r} is not an absolute {' or '.join(schemes)} URL")
        return text
    return AfterValidator(check)


def _regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise FieldError(f"invalid regex {pattern!r}: {exc}") from None
    return pattern


def _matching(pattern: str, what: str) -> AfterValidator:
    def check(text: str) -> str:
        if not re.fullmatch(pattern, text):
            raise FieldError(f"{text!r} {what}")
        return text
    return AfterValidator(check)


def _profile_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise FieldError(f"{name!r} must be lower-case letters, digits, '.', '_', '-'")
    return name


def _user_notice(text: str) -> str:
    if len(text) > 200:
        raise FieldError(f"{len(text)} characters; RFC 5280 allows at most 200")
    return text


Oid = Annotated[NonBlank, AfterValidator(_dotted_oid)]
Regex = Annotated[NonBlank, AfterValidator(_regex)]
ProfileName = Annotated[NonBlank, AfterValidator(_profile_name)]
Language = Annotated[NonBlank, _matching(r"[a-z]{2}", "is not a two-letter ISO 639-1 code")]
Country = Annotated[NonBlank, _matching(r"[A-Z]{2}", "is not an ISO 3166 alpha-2 code")]
UserNotice = Annotated[NonBlank, AfterValidator(_user_notice)]


# --- list rules -------------------------------------------------------------------------------

def _key_algorithms(texts: list[str]) -> list[str]:
    """Each entry parses as a KeySpec, none twice (``ec-p256`` = ``EC-P256``); canonical text."""
    specs: list[KeySpec] = []
    for i, text in enumerate(texts):
        try:
            spec = KeySpec.parse(text)
        except UnsupportedKeyError as exc:
            raise FieldError(str(exc), i) from None
        if spec in specs:
            raise FieldError(f"{spec} listed twice", i)
        specs.append(spec)
    if not specs:
        raise FieldError("must list at least one key algorithm")
    return [str(spec) for spec in specs]


def _key_usage(texts: list[str]) -> list[str]:
    names: list[str] = []
    for i, text in enumerate(texts):
        text = KEY_USAGE_ALIASES.get(text, text)
        if text not in KEY_USAGE_NAMES:
            raise FieldError(f"unknown keyUsage {text!r}{hint(text, KEY_USAGE_NAMES)}; known: "
                             f"{', '.join(KEY_USAGE_NAMES)}", i)
        names.append(text)
    if not names:
        raise FieldError("must list at least one keyUsage bit")
    return names


def _extended_key_usage(texts: list[str]) -> list[str]:
    """Names (serverAuth ...) or dotted OIDs -> dotted OIDs, none twice."""
    oids: list[str] = []
    for i, text in enumerate(texts):
        if text in EKU_NAMES:
            oid = EKU_NAMES[text]
        elif OID_RE.fullmatch(text):
            oid = text
        else:
            raise FieldError(f"unknown extended key usage {text!r}{hint(text, EKU_NAMES)}; use "
                             f"one of {', '.join(EKU_NAMES)} or a dotted OID", i)
        if oid in oids:
            raise FieldError(f"{text} listed twice", i)
        oids.append(oid)
    return oids


def _unique_policies(policies: list[PolicyInput]) -> list[PolicyInput]:
    for i, policy in enumerate(policies):
        if any(p.oid == policy.oid for p in policies[:i]):
            raise FieldError(f"policy {policy.oid} listed twice", i, "oid")
    return policies


# --- the mappings -----------------------------------------------------------------------------

class ProfileHeader(InputModel):
    """The two keys needed before the rest can be read: who the profile is, whom it extends."""

    model_config = ConfigDict(extra="ignore")

    name: ProfileName
    extends: NonBlank | None = None


class SubjectEntryInput(InputModel):
    """One ``subject:`` entry as written; attribute types and bounds are resolved after merging
    (a child's ``{name: UID, max_count: 1}`` is complete only with its parent's entry)."""

    # oid and max_length default to None, which YAML cannot give them (null is refused like
    # any non-string, non-integer): no oid, and the attribute type's upper bound
    name: NonBlank
    oid: Oid = Field(None)
    required: bool = False
    max_count: int = Field(1, ge=1)
    value: NonBlank | None = None
    patterns: list[Regex] = []
    max_length: int = Field(None, ge=1)


class SignatureInput(InputModel):
    hash: HashName = "sha256"
    rsa_padding: RsaPadding = "pkcs1v15"

    def to_rule(self) -> SignatureRule:
        return SignatureRule(self.hash, self.rsa_padding)


class ValidityInput(InputModel):
    default_days: int = Field(ge=1)
    max_days: int = Field(ge=1)

    @model_validator(mode="after")
    def _default_within_max(self) -> ValidityInput:
        if self.default_days > self.max_days:
            raise FieldError(f"{self.default_days} exceeds max_days {self.max_days}",
                             "default_days")
        return self

    def to_rule(self) -> ValidityRule:
        return ValidityRule(self.default_days, self.max_days)


class BasicConstraintsInput(InputModel):
    ca: bool = False
    path_length: int | None = Field(None, ge=0)
    critical: bool = True

    @model_validator(mode="after")
    def _path_length_needs_ca(self) -> BasicConstraintsInput:
        if self.path_length is not None and not self.ca:
            raise FieldError("pathLenConstraint is only meaningful when ca is true",
                             "path_length")
        return self

    def to_rule(self) -> BasicConstraintsRule:
        return BasicConstraintsRule(self.ca, self.path_length, self.critical)


class PolicyInput(InputModel):
    key_order: ClassVar[tuple[str, ...]] = ("oid", "cps_uri", "user_notice")

    user_notice: UserNotice | None = None
    oid: Oid
    cps_uri: Annotated[NonBlank, _url("http", "https")] | None = None

    def to_rule(self) -> PolicyRule:
        return PolicyRule(self.oid, self.cps_uri, self.user_notice)


class PdsInput(InputModel):
    """One PKI disclosure statement: where (https) and in which language."""

    key_order: ClassVar[tuple[str, ...]] = ("url", "language")

    language: Language
    url: Annotated[NonBlank, _url("https")]


class QcStatementsInput(InputModel):
    key_order: ClassVar[tuple[str, ...]] = ("compliance", "sscd", "qc_type", "pds",
                                            "legislation", "semantics")

    pds: list[PdsInput] = []
    legislation: list[Country] = []
    compliance: bool = True
    sscd: bool = False
    qc_type: QcType | None = None
    semantics: Semantics | None = None

    @model_validator(mode="after")
    def _says_something(self) -> QcStatementsInput:
        if not (self.compliance or self.sscd or self.qc_type or self.pds or self.legislation
                or self.semantics):
            raise FieldError("states nothing; omit qc_statements instead")
        return self

    def to_rule(self) -> QcStatementsRule:
        return QcStatementsRule(self.compliance, self.sscd, self.qc_type,
                                tuple((p.url, p.language) for p in self.pds),
                                tuple(self.legislation), self.semantics)


class ProfileDocument(InputModel):
    """One profile file. Every key is optional here: with ``extends:`` a file may set only what
    differs from its parent, so which keys a concrete profile needs is the loader's check.

    Fields are declared in the order the loader has always checked them, so the first of several
    errors is the one it reported before pydantic; ``key_order`` is the schema's documented
    order, in which an unknown key's message lists the allowed keys.
    """

    key_order: ClassVar[tuple[str, ...]] = (
        "name", "description", "extends", "abstract", "subject", "subject_remove",
        "key_algorithms", "signature", "validity", "key_usage", "key_usage_critical",
        "extended_key_usage", "extended_key_usage_critical", "basic_constraints", "policies",
        "authority_info_access", "crl_distribution_point", "freshest_crl", "email_san",
        "dns_san", "qc_statements", "ocsp_nocheck", "self_signed")

    name: str  # checked first, by ProfileHeader
    extends: NonBlank | None = None
    subject_remove: list[NonBlank] = []
    abstract: bool = False
    description: str = ""
    key_algorithms: Annotated[list[NonBlank], AfterValidator(_key_algorithms)] = []
    signature: SignatureInput = SignatureInput()
    validity: ValidityInput = ValidityInput(default_days=365, max_days=365)
    key_usage: Annotated[list[NonBlank], AfterValidator(_key_usage)] = []
    key_usage_critical: bool = True
    extended_key_usage: Annotated[list[NonBlank], AfterValidator(_extended_key_usage)] = []
    extended_key_usage_critical: bool = False
    basic_constraints: BasicConstraintsInput | None = None
    policies: Annotated[list[PolicyInput], AfterValidator(_unique_policies)] = []
    authority_info_access: bool = True
    crl_distribution_point: bool = True
    freshest_crl: bool = False
    email_san: SanPolicy = "forbidden"
    dns_san: SanPolicy = "forbidden"
    qc_statements: QcStatementsInput | None = None
    ocsp_nocheck: bool = False
    self_signed: bool = False
    subject: list[SubjectEntryInput] = []  # last: each entry is checked after the merge


def domain_value(key: str, value: Any) -> Any:
    """A validated top-level value as the :class:`~ca.profiles.model.Profile` field holds it."""
    if key == "key_algorithms":
        return tuple(KeySpec.parse(text) for text in value)
    if key == "key_usage":
        return frozenset(value)
    if key in ("extended_key_usage", "policies"):
        return tuple(item.to_rule() if isinstance(item, InputModel) else item for item in value)
    if isinstance(value, InputModel):
        return value.to_rule()  # type: ignore[attr-defined]
    return value
