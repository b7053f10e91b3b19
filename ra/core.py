"""The pure registration API core: (method, path, caller, body, query, headers) in, an
:class:`Answer` (status, JSON body, headers) out.

:meth:`RegistrationApi.handle` never raises. Every refusal is an RFC 9457 problem
(``application/problem+json``: ``type``, ``title``, ``status``, ``detail``, and ``errors``
naming each member at fault when a body or a query does not validate): 400 for a body that is
not a JSON object or a bad query, 401 without a caller, 403 out of the caller's role or scope
(ra/authz.py; checked before anything is read or written; and a CA's or a service unit's
certificate is never the API's to revoke, hold or release), 404 for a CA or serial that is not
there (another CA's serial included), 405, 409 for a state change the certificate's state
refuses (revoking a revoked one, releasing one not on hold) or a request still in progress
under its Idempotency-Key, 422 for a request the profile or the CA refuses (the field named),
or the same Idempotency-Key with another body; 503 while the database or the HSM is away;
anything else is a bug, logged with its traceback and answered 500 without one.

The state is reached through :class:`RegistrationService`, exactly the methods of
ca.services.registration.Registration this core calls. Imports no flask, sqlalchemy or click.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from pydantic import BaseModel, ValidationError

from ca.errors import (AlreadyExistsError, BackendUnavailableError, CredentialRequestError,
                       CSRError, DatabaseBusyError, DatabaseUnavailableError,
                       IdempotencyKeyReusedError,
                       IssuanceError, KeyPolicyError, NotFoundError, ProfileError,
                       RequestInProgressError, SubjectError, UnsupportedKeyError)
from ca.issuance import load_csr
from ca.keys.base import KeySpec
from ca.validation import format_loc, issues
from ra import authz, models
from ra.openapi import document

__all__ = ["Answer", "Caller", "PREFIX", "PROBLEM_JSON", "RegistrationApi",
           "RegistrationService", "problem"]

log = logging.getLogger("tincay.ra")
PREFIX = "/api/v1/"
PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE = "urn:tincay:problem:"
DEFAULT_LIMIT, MAX_LIMIT = 100, 500
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # an Idempotency-Key: visible ASCII
_NAMED = re.compile(r"^(?:unknown key|missing required key) '([^']*)'")
_ACTIONS = {"revoke": authz.REVOKE, "hold": authz.HOLD, "release": authz.RELEASE}


class Caller(authz.Scoped, Protocol):
    """The authenticated client (ca.services.clients.ClientInfo)."""

    client_id: str


class RegistrationService(Protocol):
    """What this core calls of ca.services.registration.Registration."""

    def issue(self, by: Mapping[str, Any], ca: str, profile: str,
              subject_pairs: Sequence[tuple[str, str]], *, csr: Any = None,
              key_type: Any = None, emails: Sequence[str] = (),
              dns_names: Sequence[str] = (), days: int | None = None,
              idempotency_key: str | None = None,
              request_sha256: str | None = None,
              credential: Any = None) -> tuple[dict[str, Any], bool]: ...

    def revoke(self, by: Mapping[str, Any], ca: str, serial: str, reason: str,
               invalidity_date: Any = None) -> dict[str, Any]: ...

    def release(self, by: Mapping[str, Any], ca: str, serial: str) -> dict[str, Any]: ...

    def certificate(self, ca: str, serial: str) -> dict[str, Any]: ...

    def certificates(self, *, after: int = 0, limit: int = 100, ca: str | None = None,
                     profile: str | None = None, status: str | None = None,
                     cas: Sequence[str] | None = None, profiles: Sequence[str] | None = None
                     ) -> tuple[list[dict[str, Any]], int | None]: ...

    def events(self, *, after: int = 0, limit: int = 100
               ) -> tuple[list[dict[str, Any]], int | None]: ...

    def authorities(self) -> list[dict[str, Any]]: ...

    def profiles(self) -> list[dict[str, Any]]: ...

    def has_authority(self, name: str) -> bool: ...


@dataclass(frozen=True)
class Answer:
    """An HTTP status, a JSON body and extra headers; ``content_type`` says which JSON."""

    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = field(default=())

    @property
    def content_type(self) -> str:
        return PROBLEM_JSON if self.status >= 400 else "application/json"


class Problem(Exception):
    """A refusal on its way to becoming an RFC 9457 answer."""

    def __init__(self, status: int, slug: str, title: str, detail: str,
                 errors: list[dict[str, str]] | None = None,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.errors, self.headers = errors, headers

    def answer(self) -> Answer:
        return problem(self.status, self.slug, self.title, self.detail, self.errors,
                       self.headers)


def problem(status: int, slug: str, title: str, detail: str,
            errors: list[dict[str, str]] | None = None,
            headers: tuple[tuple[str, str], ...] = ()) -> Answer:
    """An RFC 9457 problem answer (also what the HTTP adapter answers its own refusals with)."""
    body = models.Problem(type=PROBLEM_TYPE + slug, title=title, status=status, detail=detail,
                          errors=errors).model_dump(mode="json", exclude_none=True)
    return Answer(status, body, headers)


def invalid(field_name: str, message: str, status: int = 422) -> Problem:
    """One member at fault: the detail and ``errors`` both name it."""
    return Problem(status, "invalid-request", "The request is not valid",
                   f"{field_name}: {message}", [{"field": field_name, "message": message}])


def _field_issues(exc: ValidationError, model: type[BaseModel]) -> list[dict[str, str]]:
    out = []
    for issue in issues(exc, model):
        name = issue.path
        named = _NAMED.match(issue.message)
        if named:  # an unknown or missing member: name the member, not its mapping
            name = format_loc(issue.loc + (named.group(1),))
        out.append({"field": name or "body", "message": issue.message})
    return out


def parse_json(body: bytes, *, empty_ok: bool) -> dict[str, Any]:
    """A JSON object, members unique; a 400 Problem otherwise."""
    if not body.strip():
        if empty_ok:
            return {}
        raise invalid("body", "a JSON object is required", 400)

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for name, value in pairs:
            if name in seen:
                raise invalid(name[:64], "member is repeated", 400)
            seen[name] = value
        return seen

    try:
        parsed = json.loads(body.decode("utf-8"), object_pairs_hook=unique)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise invalid("body", f"not valid JSON ({str(exc)[:120]})", 400) from None
    if not isinstance(parsed, dict):
        raise invalid("body", "expected a JSON object", 400)
    return parsed


def validate(model: type[models.RaModel], body: bytes, *, empty_ok: bool = False) -> Any:
    """The body as ``model``; 400/422 Problems naming every member at fault."""
    try:
        return model.model_validate(parse_json(body, empty_ok=empty_ok))
    except ValidationError as exc:
        errors = _field_issues(exc, model)
        raise Problem(422, "invalid-request", "The request is not valid",
                      "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                      errors) from None


def encode_cursor(kind: str, after: int) -> str:
    """Opaque to clients: which listing, and the last id it served."""
    return base64.urlsafe_b64encode(f"{kind}:{after}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        text = ""
    prefix, _, number = text.partition(":")
    if prefix != kind or not number.isdigit() or len(number) > 18:
        raise invalid("cursor", "not a cursor this listing gave", 400)
    return int(number)


def request_digest(request: models.RaModel) -> str:
    """The hash an Idempotency-Key is bound to: the validated request, canonical (member
    order and white space do not make it another request). Never over a credential's PIN:
    a fast hash of a short PIN, stored with the claim, would give it away."""
    document = request.model_dump(mode="json")
    if isinstance(document.get("credential"), dict):
        document["credential"].pop("pin", None)
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _issuance_field(exc: IssuanceError, request: models.IssueRequest) -> str:
    """Which member a refusal of the issuance core is about."""
    if isinstance(exc, SubjectError):
        return "subject"
    if isinstance(exc, CSRError):
        return "csr"
    if isinstance(exc, KeyPolicyError):
        return "csr" if request.csr is not None else "key_type"
    text = str(exc).lower()
    if "e-mail" in text or "email" in text or "rfc822" in text:
        return "emails"
    if "dns" in text:
        return "dns_names"
    if "validity" in text or "notafter" in text:
        return "days"
    if "profile" in text:
        return "profile"
    return "body"


class RegistrationApi:
    """The registration API over ``service``. ``status_changed(ca, serial)``, if given, is told
    of every certificate the API issued, revoked, held or released (the app refreshes that
    serial's pre-produced OCSP answer with it, as `tincay issue` and `tincay revoke` do)."""

    def __init__(self, service: RegistrationService,
                 status_changed: Callable[[str, str], Any] | None = None) -> None:
        self.service = service
        self._status_changed = status_changed
        self._openapi: dict[str, Any] | None = None

    def _changed(self, ca: str, serial: str) -> None:
        """Validators then get the new status pre-produced at once, not from the next
        maintenance pass. The change is committed already, so a failure here is not the
        client's: the answer is signed live meanwhile (a stored answer that disagrees with
        the certificates table is never served: ocsp.sources), and the line says so."""
        if self._status_changed is None:
            return
        try:
            self._status_changed(ca, serial)
        except Exception as exc:  # noqa: BLE001 - the call succeeded; the answer waits
            log.warning("OCSP answer of %s %s not pre-produced (answered live until the next "
                        "maintenance pass): %s", ca, serial, type(exc).__name__)

    def handle(self, method: str, path: str, caller: Caller | None, body: bytes,
               query: Mapping[str, str | Sequence[str]] | None = None,
               headers: Mapping[str, str] | None = None) -> Answer:
        """One call; never raises."""
        try:
            return self._route(method.upper(), path, caller, body, query or {},
                               {k.lower(): v for k, v in (headers or {}).items()})
        except Problem as exc:
            return exc.answer()
        except authz.Forbidden as exc:
            return problem(403, "forbidden", "Forbidden", str(exc))
        except (DatabaseUnavailableError, DatabaseBusyError, BackendUnavailableError):
            return problem(503, "unavailable", "Service Unavailable",
                           "the service is unavailable, try later", None,
                           (("Retry-After", "30"),))
        except Exception:  # noqa: BLE001 - a bug: logged with its traceback, never sent
            log.exception("registration API %s %s failed", method[:8], path[:200])
            return problem(500, "internal-error", "Internal Server Error", "internal error")

    # --- routing ------------------------------------------------------------------------

    def _route(self, method: str, path: str, caller: Caller | None, body: bytes,
               query: Mapping[str, Any], headers: Mapping[str, str]) -> Answer:
        if not path.startswith(PREFIX):
            raise Problem(404, "not-found", "Not Found", "the API is under /api/v1/")
        parts = path[len(PREFIX):].strip("/").split("/")
        if parts == ["openapi.json"]:
            self._allow(method, "GET")
            if self._openapi is None:
                self._openapi = document()
            return Answer(200, self._openapi)
        if caller is None:
            raise Problem(401, "unauthorized", "Unauthorized", "a bearer access token is "
                          "required", headers=(("WWW-Authenticate", 'Bearer realm="tincay"'),))
        by = {"client": caller.name, "client_id": caller.client_id}
        if parts == ["certificates"]:
            self._allow(method, "GET", "POST")
            if method == "POST":
                _query(query, ())  # a misplaced ?ca= is an error, not ignored
                return self._issue(caller, by, body, headers)
            return self._list_certificates(caller, query)
        if len(parts) == 3 and parts[0] == "certificates":
            self._allow(method, "GET")
            _query(query, ())
            return self._show(caller, parts[1], parts[2])
        if len(parts) == 4 and parts[0] == "certificates" and parts[3] in _ACTIONS:
            self._allow(method, "POST")
            _query(query, ())
            return self._change(caller, by, parts[1], parts[2], parts[3], body)
        if parts in (["cas"], ["profiles"], ["audit"]):
            self._allow(method, "GET")
            return getattr(self, "_" + parts[0])(caller, query)
        raise Problem(404, "not-found", "Not Found", f"no such resource: {path[:200]}")

    @staticmethod
    def _allow(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise Problem(405, "method-not-allowed", "Method Not Allowed",
                          f"{method[:8]} is not served here; use {', '.join(allowed)}",
                          headers=(("Allow", ", ".join(allowed)),))

    # --- issuance ------------------------------------------------------------------------

    def _issue(self, caller: Caller, by: dict[str, str], body: bytes,
               headers: Mapping[str, str]) -> Answer:
        request: models.IssueRequest = validate(models.IssueRequest, body)
        authz.check(caller, authz.ISSUE, request.ca, request.profile)
        key = headers.get("idempotency-key")
        if key is not None and not _KEY.match(key):
            raise invalid("Idempotency-Key", "1 to 255 visible ASCII characters", 400)
        if not self.service.has_authority(request.ca):
            raise invalid("ca", f"no CA named {request.ca!r}")
        if request.profile not in self._end_entity_profiles():
            raise invalid("profile", f"no end-entity profile named {request.profile!r}")
        csr = key_type = None
        try:
            if request.csr is not None:
                csr = load_csr(request.csr.encode("ascii", "replace"))
            if request.key_type is not None:
                key_type = KeySpec.parse(request.key_type)
        except CSRError as exc:
            raise invalid("csr", str(exc)) from None
        except UnsupportedKeyError as exc:
            raise invalid("key_type", str(exc)) from None
        credential = request.credential
        if credential is not None and not credential.clients:  # the caller drives it
            credential = credential.model_copy(update={"clients": [by["client"]]})
        try:
            record, replayed = self.service.issue(
                by, request.ca, request.profile, list(request.subject), csr=csr,
                key_type=key_type, emails=request.emails, dns_names=request.dns_names,
                days=request.days, idempotency_key=key,
                request_sha256=request_digest(request) if key is not None else None,
                credential=credential)
        except CredentialRequestError as exc:
            raise invalid(f"credential.{exc.field}", str(exc)) from None
        except IdempotencyKeyReusedError as exc:
            raise Problem(422, "idempotency-key-reused", "Idempotency-Key reused",
                          str(exc), [{"field": "Idempotency-Key", "message": str(exc)}]) \
                from None
        except RequestInProgressError as exc:
            raise Problem(409, "request-in-progress", "Conflict", str(exc),
                          headers=(("Retry-After", "1"),)) from None
        except (IssuanceError, UnsupportedKeyError) as exc:
            name = "key_type" if isinstance(exc, UnsupportedKeyError) else \
                _issuance_field(exc, request)
            raise invalid(name, str(exc)) from None
        except ProfileError as exc:
            raise invalid("profile", str(exc)) from None
        if not replayed:
            self._changed(record["ca"], record["serial"])
        location = f"{PREFIX}certificates/{record['ca']}/{record['serial']}"
        return Answer(200 if replayed else 201, _dump(models.CertificateRecord, record),
                      (("Location", location),))

    def _end_entity_profiles(self) -> set[str]:
        """The profiles the API issues from, and so the only certificates it may revoke,
        hold or release: a CA's certificate, or its OCSP responder's, is the operator's."""
        return {p["name"] for p in self.service.profiles()}

    # --- one certificate -----------------------------------------------------------------

    def _find(self, ca: str, serial: str) -> dict[str, Any]:
        try:
            return self.service.certificate(ca, serial)
        except NotFoundError as exc:
            raise Problem(404, "not-found", "Not Found", str(exc)) from None

    def _show(self, caller: Caller, ca: str, serial: str) -> Answer:
        authz.check(caller, authz.READ, ca)
        record = self._find(ca, serial)
        authz.check(caller, authz.READ, ca, record["profile"])
        return Answer(200, _dump(models.CertificateRecord, record))

    def _change(self, caller: Caller, by: dict[str, str], ca: str, serial: str, what: str,
                body: bytes) -> Answer:
        action = _ACTIONS[what]
        authz.check(caller, action, ca)
        request = validate(models.RevokeRequest if what == "revoke" else models.EmptyRequest,
                           body, empty_ok=True)
        record = self._find(ca, serial)
        authz.check(caller, action, ca, record["profile"])
        if record["profile"] not in self._end_entity_profiles():
            raise authz.Forbidden(f"certificate {serial[:64]} is a CA's or a service unit's "
                                  f"(profile {record['profile']}): the operator revokes it "
                                  "with tincay revoke, not the registration API")
        try:
            if what == "revoke":
                record = self.service.revoke(by, ca, serial, request.reason,
                                             request.invalidity_date)
            elif what == "hold":
                record = self.service.revoke(by, ca, serial, "certificateHold")
            else:
                record = self.service.release(by, ca, serial)
        except NotFoundError as exc:
            raise Problem(404, "not-found", "Not Found", str(exc)) from None
        except (AlreadyExistsError, IssuanceError) as exc:
            if "invalidity date" in str(exc):
                raise invalid("invalidity_date", str(exc)) from None
            raise Problem(409, "conflict", "Conflict", str(exc)) from None
        self._changed(ca, record["serial"])
        return Answer(200, _dump(models.CertificateRecord, record))

    # --- listings ------------------------------------------------------------------------

    def _list_certificates(self, caller: Caller, query: Mapping[str, Any]) -> Answer:
        params = _query(query, ("ca", "profile", "status", "cursor", "limit"))
        ca, profile, status = params.get("ca"), params.get("profile"), params.get("status")
        authz.check(caller, authz.READ, ca, profile)
        after = decode_cursor("c", params["cursor"]) if "cursor" in params else 0
        try:
            items, last = self.service.certificates(
                after=after, limit=_limit(params), ca=ca, profile=profile, status=status,
                cas=authz.allowed_cas(caller), profiles=authz.allowed_profiles(caller))
        except NotFoundError as exc:
            raise invalid("status" if status and "status" in str(exc) else "ca", str(exc),
                          400) from None
        return Answer(200, _dump(models.CertificatePage, {
            "items": items, "next_cursor": encode_cursor("c", last) if last else None}))

    def _audit(self, caller: Caller, query: Mapping[str, Any]) -> Answer:
        params = _query(query, ("cursor", "limit"))
        authz.check(caller, authz.AUDIT)
        after = decode_cursor("a", params["cursor"]) if "cursor" in params else 0
        items, last = self.service.events(after=after, limit=_limit(params))
        return Answer(200, _dump(models.AuditPage, {
            "items": items, "next_cursor": encode_cursor("a", last) if last else None}))

    def _cas(self, caller: Caller, query: Mapping[str, Any]) -> Answer:
        _query(query, ())
        authz.check(caller, authz.READ)
        items = [a for a in self.service.authorities()
                 if authz.may(caller, authz.READ, ca=a["name"])]
        return Answer(200, _dump(models.AuthorityList, {"items": items}))

    def _profiles(self, caller: Caller, query: Mapping[str, Any]) -> Answer:
        _query(query, ())
        authz.check(caller, authz.READ)
        items = [p for p in self.service.profiles()
                 if authz.may(caller, authz.READ, profile=p["name"])]
        return Answer(200, _dump(models.ProfileList, {"items": items}))


def _query(query: Mapping[str, Any], allowed: tuple[str, ...]) -> dict[str, str]:
    """Single-valued query parameters among ``allowed``; 400 naming any other or repeated."""
    out: dict[str, str] = {}
    for name, value in query.items():
        if name not in allowed:
            raise invalid(name[:64], "unknown query parameter"
                          + (f"; allowed: {', '.join(allowed)}" if allowed else ""), 400)
        values = [value] if isinstance(value, str) else list(value)
        if len(values) != 1:
            raise invalid(name, "give it once", 400)
        if values[0] != "":
            out[name] = values[0]
    return out


def _limit(params: Mapping[str, str]) -> int:
    text = params.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise invalid("limit", f"an integer from 1 to {MAX_LIMIT}", 400)
    return int(text)


def _dump(model: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    """A response body through its model: what the OpenAPI document says is what is sent."""
    return model.model_validate(dict(data)).model_dump(mode="json")
