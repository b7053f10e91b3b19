"""The pure part of a ``tincay issue --batch`` row: checked against its profile and, for a
CSR row, prepared (its TBSCertificate), with nothing but the profiles, the issuer's public
facts and the time. No key, no database: ca.services.batch_issuance runs it in the main
process or hands it to worker processes (ca.services.batch_workers), with the same results.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from cryptography import x509

from ca import issuance as core
from ca.errors import CSRError, KeyBackendError, KeyPolicyError, SubjectError, TincayError
from ca.issuance import CertificateRequest, IssuerInfo, PreparedCertificate
from ca.issuance.checks import check_dns_names, check_emails
from ca.keys.base import KeySpec, PublicKey
from ca.profiles import Profile, ProfileSet
from ca.services.batch_files import (IssueRow, RawRow, RowError, RowResult, csr_bytes,
                                     dump_row, validate)
from ca.services.context import not_after
from ca.subject import build_name, format_name, parse_subject


@dataclass
class Request:
    """A row that passed its checks, on its way to a certificate. ``subject`` is None for a
    row checked in a worker process (an x509.Name does not cross processes): it comes back
    prepared, and is checked again here only if it must be prepared again."""

    number: int
    claim: str
    digest: str
    profile: Profile
    subject: x509.Name | None
    subject_text: str
    emails: tuple[str, ...]
    dns_names: tuple[str, ...]
    days: int | None
    public_key: PublicKey | None = None  # None until a key_type row's key is generated
    spec: KeySpec | None = None
    key_uri: str | None = None
    prepared: PreparedCertificate | None = None
    cert_id: int | None = None


def check_row(profiles: ProfileSet, ca: str, raw: RawRow, base: Path) -> Request:
    """Everything about a row that needs no key and no database: RowError naming the field
    at fault. A CSR is parsed and its signature verified here."""
    if raw.unreadable is not None:
        raise RowError("row", raw.unreadable)
    row: IssueRow = validate(IssueRow, raw.fields)
    if (row.csr is None) == (row.key_type is None):
        raise RowError("key_type" if row.key_type else "csr",
                       "give exactly one of csr and key_type")
    profile = _field("profile", lambda: profiles.get(row.profile))
    if profile.self_signed or (profile.basic_constraints and profile.basic_constraints.ca):
        raise RowError("profile", f"profile {profile.name} is for CAs: use tincay init")
    subject = _field("subject", lambda: build_name(profile, parse_subject(row.subject)))
    emails = _field("email", lambda: check_emails(profile, tuple(row.email)))
    dns_names = _field("dns", lambda: check_dns_names(profile, tuple(row.dns)))
    content = dump_row(raw.fields)
    digest = hashlib.sha256(content.encode()).hexdigest()
    claim = "batch:" + hashlib.sha256(f"{ca}\n{raw.number}\n{content}".encode()).hexdigest()
    request = Request(raw.number, claim, digest, profile, subject, format_name(subject),
                      emails, dns_names, row.days)
    if row.csr is not None:
        csr = _field("csr", lambda: core.load_csr(csr_bytes(row.csr or "", base)))
        request.public_key = csr.public_key()  # type: ignore[assignment]
        _field("csr", lambda: core.check_key(profile, request.public_key))  # type: ignore[arg-type]
    else:
        spec = _field("key_type", lambda: KeySpec.parse(row.key_type or ""))
        if not profile.allows_key(spec):
            raise RowError("key_type", f"key_type: profile {profile.name} does not allow "
                                       f"{spec} keys")
        request.spec = spec
    return request


def prepare_row(request: Request, issuer: IssuerInfo, urls: core.Urls | None,
                now: datetime) -> RowResult | None:
    """Set ``request.prepared`` (a fresh serial); the row's error if it is refused."""
    def prepare(start: datetime, until: datetime | None) -> None:
        assert request.subject is not None and request.public_key is not None
        request.prepared = core.prepare(CertificateRequest(
            request.profile, request.subject, request.public_key, serial=core.new_serial(),
            not_before=start, not_after=until, emails=request.emails,
            dns_names=request.dns_names), issuer, urls)
    return refusing(request, now, prepare)


def refusing(request: Request, now: datetime,
             step: Callable[[datetime, datetime | None], None]) -> RowResult | None:
    """``step(now, notAfter)``; the row's error naming its field if it refuses the row."""
    try:
        step(now, not_after(now, request.days))
        return None
    except KeyPolicyError as exc:
        return row_error(request, "csr" if request.spec is None else "key_type", exc)
    except (SubjectError, CSRError) as exc:
        return row_error(request, "subject", exc)
    except KeyBackendError:
        raise
    except TincayError as exc:  # validity beyond the profile or the issuer, mostly
        text = str(exc)
        return row_error(request, "days" if "notAfter" in text or "validity" in text
                         else "profile", exc)


def row_error(request: Request, name: str, exc: Exception) -> RowResult:
    return RowResult(request.number, "error", field=name, error=f"{name}: {exc}")


def _field(name: str, check: Callable[[], Any]) -> Any:
    """``check()``, its refusal as a RowError naming ``name``."""
    try:
        return check()
    except (TincayError, ValueError) as exc:
        if isinstance(exc, RowError):
            raise
        raise RowError(name, f"{name}: {exc}") from None
