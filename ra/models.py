"""The JSON bodies of the registration API (/api/v1/), as pydantic v2 models.

Requests are frozen, strict and closed (``extra="forbid"``, as every JSON body tincay reads):
an unknown member is refused with its name, so a misspelt ``dns_name`` is an error the HR
system sees, not a default it did not mean. The values are checked for form here (a DN that
parses, a PEM block, an ISO 8601 time with its offset, a reason RFC 5280 names); what depends
on the CA's data (the profile's subject rules, the CSR's signature, whether the CA exists) is
the service's to say, and the core names the field either way.

Responses are models too, so the OpenAPI document (ra/openapi.py) describes exactly what the
core sends: the core builds each body through its model.

Pure: imports no flask, sqlalchemy or click.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema,
                      model_validator)

from ca.revocation import OPERATOR_REASONS
from ca.validation import FieldError, InputModel, subject_pairs, type_name

__all__ = ["AuditEvent", "AuditPage", "AuthorityInfo", "AuthorityList", "CertificatePage",
           "CertificateRecord", "CertificateSummary", "CredentialCreated",
           "CredentialRequest", "EmptyRequest", "FieldIssue",
           "IssueRequest", "Problem", "ProfileInfo", "ProfileList", "REASONS",
           "RevokeRequest"]

REASONS = OPERATOR_REASONS  # what `tincay revoke --reason` takes
MAX_PEM = 48 * 1024  # a CSR; the adapter caps a whole body at 64 KiB
MAX_SUBJECT, MAX_ATTRIBUTES = 2048, 32
_KEY_TYPE = re.compile(r"^[a-z0-9-]{2,32}$")
_PEM_CSR = re.compile(r"^\s*-----BEGIN (NEW )?CERTIFICATE REQUEST-----[A-Za-z0-9+/=\s]+"
                      r"-----END (NEW )?CERTIFICATE REQUEST-----\s*$")


def _subject(value: object) -> tuple[tuple[str, str], ...]:
    """A DN string as the CLI's ``--subject`` takes it, or the attributes as JSON, one
    ``{"NAME": "value"}`` object each (as hierarchy specs write them): (name, value) pairs
    either way; the profile's rules are checked by the service."""
    if isinstance(value, str) and len(value) > MAX_SUBJECT:
        raise FieldError(f"at most {MAX_SUBJECT} characters")
    if isinstance(value, list) and len(value) > MAX_ATTRIBUTES:
        raise FieldError(f"at most {MAX_ATTRIBUTES} attributes")
    if not isinstance(value, (str, list)):
        raise FieldError(f"expected a DN string or a list of {{NAME: value}} objects, got "
                         f"{type_name(value)}")
    return subject_pairs(value)


def _csr(value: object) -> str:
    if not isinstance(value, str):
        raise FieldError(f"expected a PEM string, got {type_name(value)}")
    if not _PEM_CSR.match(value):
        raise FieldError("is not a PEM certificate request (-----BEGIN CERTIFICATE "
                         "REQUEST-----)")
    return value


def _timestamp(value: object) -> datetime:
    """ISO 8601 with an offset (``2026-12-01T08:00:00Z``); a time without one is ambiguous."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise FieldError(f"expected an ISO 8601 time string, got {type_name(value)}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise FieldError(f"{value[:64]!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise FieldError(f"{value[:64]!r} has no UTC offset (add Z or +07:00)")
    return parsed


def _reason(value: object) -> object:
    """Any case, with or without - or _, as ``tincay revoke`` reads it; the canonical RFC name
    comes out (an unknown one is left for the Literal to refuse, listing the names)."""
    if isinstance(value, str):
        folded = value.replace("-", "").replace("_", "").lower()
        for name in REASONS:
            if name.lower() == folded:
                return name
    return value


Subject = Annotated[tuple[tuple[str, str], ...], BeforeValidator(_subject), WithJsonSchema({
    "oneOf": [
        {"type": "string", "maxLength": MAX_SUBJECT,
         "examples": ["C=VN, O=Bệnh viện Quận 11, CN=Nguyễn Văn A, UID=CCCD:079073009568"]},
        {"type": "array", "maxItems": MAX_ATTRIBUTES,
         "items": {"type": "object", "minProperties": 1, "maxProperties": 1,
                   "additionalProperties": {"type": "string"}},
         "examples": [[{"C": "VN"}, {"CN": "Nguyễn Văn A"}, {"UID": "CCCD:079073009568"}]]}],
    "description": "A DN string as tincay issue --subject takes it, or one {NAME: value} "
                   "object per attribute"}, mode="validation")]
Csr = Annotated[str, BeforeValidator(_csr), Field(
    max_length=MAX_PEM, json_schema_extra={"pattern": _PEM_CSR.pattern})]  # checked by _csr
Timestamp = Annotated[datetime, BeforeValidator(_timestamp)]
Reason = Annotated[Literal[REASONS], BeforeValidator(_reason)]  # type: ignore[valid-type]
Name = Annotated[str, Field(min_length=1, max_length=64)]
Email = Annotated[str, Field(min_length=3, max_length=254)]
DnsName = Annotated[str, Field(min_length=1, max_length=253)]


class RaModel(InputModel):
    """Frozen, strict, closed: a registration API request body."""


# "exactly one of csr and generate_key: true" (IssueRequest._one_key) said in the document
# too, so a client generated from it, or Schemathesis, knows the rule before a 422 does
_ONE_KEY = {"oneOf": [
    {"required": ["csr"], "properties": {"csr": {"type": "string"},
                                         "generate_key": {"const": False},
                                         "key_type": {"type": "null"},
                                         "credential": {"type": "null"}}},
    {"required": ["generate_key"], "properties": {"generate_key": {"const": True},
                                                  "csr": {"type": "null"}}}]}


class CredentialRequest(RaModel):
    """``credential`` of ``POST /api/v1/certificates`` (with ``generate_key`` only): enrol the
    new certificate for remote signing through the CSC API. ``pin`` is the holder's initial
    PIN (hashed at once, never stored or logged as given; at least 6 characters); ``clients``
    the registered clients that may drive the credential (default: the calling client)."""

    user_id: Annotated[str, Field(min_length=1, max_length=128,
                                  examples=["CCCD:079073009568"])]
    pin: Annotated[str, Field(min_length=6, max_length=128, repr=False, json_schema_extra={
        "writeOnly": True, "format": "password"})]
    clients: Annotated[list[Name], Field(max_length=16)] = []
    multisign: Annotated[int, Field(ge=1, le=1000)] = 100


class IssueRequest(RaModel):
    """``POST /api/v1/certificates``: a certificate under ``ca`` from ``profile``. The key is
    the CSR's (PEM; only its verified public key is used, never its subject or extensions),
    or with ``generate_key`` one the CA makes in its HSM and keeps wrapped (``key_type``:
    default the profile's first)."""

    model_config = ConfigDict(json_schema_extra=_ONE_KEY)

    ca: Name
    profile: Name
    subject: Subject
    csr: Csr | None = None
    generate_key: bool = False
    key_type: Annotated[str, Field(pattern=_KEY_TYPE.pattern,
                                   examples=["ec-p256", "rsa-3072"])] | None = None
    days: Annotated[int, Field(ge=1, le=36500)] | None = None
    emails: Annotated[list[Email], Field(max_length=16)] = []
    dns_names: Annotated[list[DnsName], Field(max_length=16)] = []
    credential: CredentialRequest | None = None

    @model_validator(mode="after")
    def _one_key(self) -> "IssueRequest":
        if (self.csr is None) == (not self.generate_key):
            raise FieldError("give exactly one of csr and generate_key: true", "csr")
        if self.key_type is not None and not self.generate_key:
            raise FieldError("goes with generate_key: true", "key_type")
        if self.credential is not None and not self.generate_key:
            raise FieldError("goes with generate_key: true (a remote-signing key is one the "
                             "CA keeps)", "credential")
        return self


class RevokeRequest(RaModel):
    """``POST .../revoke``: an RFC 5280 reason (certificateHold is the one ``.../release``
    undoes; ``.../hold`` says it shorter) and, optionally, since when the key was no longer
    to be trusted (ISO 8601, not in the future)."""

    reason: Reason = "unspecified"
    invalidity_date: Timestamp | None = None


class EmptyRequest(RaModel):
    """``POST .../hold`` and ``.../release``: no members (an empty body is the same)."""


# --- responses ---------------------------------------------------------------------------------

class Reply(BaseModel):
    """A response body (open: documenting, not validating)."""

    model_config = ConfigDict(frozen=True)


class CertificateSummary(Reply):
    """One certificate in a listing."""

    ca: str
    serial: str = Field(description="hex, lower case, as openssl x509 -serial prints it")
    status: Literal["pending", "issued", "failed", "revoked"]
    profile: str
    subject: str
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None = None
    revocation_reason: str | None = None


class CertificateRecord(CertificateSummary):
    """A certificate: the record, its PEM and its CA chain (issuing CA first, root last)."""

    certificate: str | None = Field(description="PEM; null while pending or failed")
    chain: list[str]
    key_uri: str | None = Field(None, description="where a key the CA generated is kept")
    credential: CredentialCreated | None = Field(
        None, description="the credential enrolled with it (issuance with credential only)")


class CredentialCreated(Reply):
    """The remote-signing credential enrolled with the certificate. ``otpauth_uri`` (the
    holder's TOTP seed, for an authenticator app) is in the answer that made the credential
    only: null in a retry's."""

    credential_id: str
    user_id: str
    otpauth_uri: str | None


class CertificatePage(Reply):
    """A page of certificates, oldest first; ``next_cursor`` (opaque) asks for the next, null
    on the last. Certificates issued meanwhile appear on later pages, never twice."""

    items: list[CertificateSummary]
    next_cursor: str | None


class AuthorityInfo(Reply):
    name: str
    status: str
    subject: str
    parent: str | None
    not_after: datetime | None
    certificate: str | None = Field(description="PEM")


class AuthorityList(Reply):
    items: list[AuthorityInfo]


class ProfileInfo(Reply):
    name: str
    description: str
    key_algorithms: list[str]
    max_days: int
    email_san: str
    dns_san: str
    subject: list[dict[str, Any]]


class ProfileList(Reply):
    items: list[ProfileInfo]


class AuditEvent(Reply):
    id: int
    at: datetime
    action: str
    authority: str | None
    serial: str | None
    subject: str | None
    details: dict[str, Any] | None


class AuditPage(Reply):
    """Audit events, oldest first; ``next_cursor`` as for certificates."""

    items: list[AuditEvent]
    next_cursor: str | None


class FieldIssue(Reply):
    field: str = Field(description="the member at fault, e.g. subject or emails[1]")
    message: str


class Problem(Reply):
    """RFC 9457 problem details (``application/problem+json``); ``errors`` on a request whose
    members do not validate."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldIssue] | None = None
