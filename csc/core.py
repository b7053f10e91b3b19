"""The pure CSC API core: (version, method, caller, JSON body) in, (HTTP status, JSON) out.

:meth:`CscApi.handle` never raises. A body that does not parse or validate is 400
invalid_request naming the member (through ca.validation); every refusal of the remote-signing
service (ca.errors.CredentialError: each carries its CSC ``error`` and HTTP ``status``) is
answered with them; an HSM or database outage is 503 temporarily_unavailable; anything else is
a bug, logged with its traceback and answered 500 server_error without one.

The service is reached through :class:`CredentialService`, exactly the methods of
ca.services.credentials.Credentials this core calls; tokens through :class:`TokenService`
(ca.services.clients.Clients); time-stamps through :class:`Stamper` (the worker's TSA unit,
which records each token before it is returned). Nothing here logs a request body: PINs, OTPs,
SADs and tokens travel in them.

Imports no flask, sqlalchemy or click.
"""
from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from asn1crypto import tsp as asn1_tsp
from pydantic import ValidationError

from ca.errors import (BackendUnavailableError, ClientAuthError, DatabaseBusyError,
                       DatabaseUnavailableError, InvalidClientError, InvalidTokenError,
                       TincayError)
from ca.validation import issues
from csc import models
from csc.describe import HASHLESS_SIGN_ALGORITHMS, credential_json, service_info
from tsa.core import TimeStampResp  # asn1crypto's own cannot read a rejection

__all__ = ["Answer", "Caller", "CredentialService", "CscApi", "Stamper", "TokenService"]

log = logging.getLogger("tincay.csc")
VERSIONS = ("v1", "v2")


class Caller(Protocol):
    """The authenticated client (ca.services.clients.ClientInfo)."""

    client_id: str
    name: str


class CredentialService(Protocol):
    """What this core calls of ca.services.credentials.Credentials (the contract's names)."""

    def list_for(self, client: Any, user_id: str | None = None) -> list[Any]: ...

    def info_for(self, client: Any, credential_id: str) -> Any: ...

    def authorize(self, client: Any, credential_id: str, *, pin: str | None, otp: str | None,
                  hashes: Sequence[bytes], hash_algorithm_oid: str,
                  num_signatures: int) -> Any: ...

    def extend(self, client: Any, credential_id: str, sad: str) -> Any: ...

    def sign_hashes(self, client: Any, credential_id: str, sad: str, hashes: Sequence[bytes],
                    hash_algorithm_oid: str | None, sign_algorithm_oid: str,
                    sign_parameters: bytes | None = None) -> list[bytes]: ...


class TokenService(Protocol):
    """What this core calls of ca.services.clients.Clients."""

    def grant(self, client_id: str, client_secret: str) -> Any: ...

    def verify(self, token: str) -> Any: ...

    def revoke(self, token: str) -> bool: ...


Stamper = Callable[[bytes, "str | None"], bytes]
"""(TimeStampReq DER, the requester's address) -> TimeStampResp DER, the token recorded before
it is returned."""


@dataclass(frozen=True)
class Answer:
    """An HTTP status, a JSON body (None: no content) and extra headers."""

    status: int
    body: dict[str, Any] | None
    headers: tuple[tuple[str, str], ...] = field(default=())


def refusal(status: int, error: str, description: str,
            headers: tuple[tuple[str, str], ...] = ()) -> Answer:
    return Answer(status, {"error": error, "error_description": description}, headers)


class BadRequest(Exception):
    """A client mistake this core found itself: 400 invalid_request."""


_MODELS: dict[tuple[str, str], type[models.CscModel]] = {
    ("v1", "credentials/list"): models.ListV1, ("v2", "credentials/list"): models.ListV2,
    ("v1", "credentials/info"): models.CredentialInfoRequest,
    ("v2", "credentials/info"): models.CredentialInfoRequest,
    ("v1", "credentials/authorize"): models.AuthorizeV1,
    ("v2", "credentials/authorize"): models.AuthorizeV2,
    ("v1", "credentials/extendTransaction"): models.ExtendV1,
    ("v2", "credentials/extendTransaction"): models.ExtendV2,
    ("v1", "signatures/signHash"): models.SignHashV1,
    ("v2", "signatures/signHash"): models.SignHashV2,
    ("v1", "signatures/timestamp"): models.TimestampRequest,
    ("v2", "signatures/timestamp"): models.TimestampRequest,
    ("v1", "auth/revoke"): models.RevokeRequest, ("v2", "auth/revoke"): models.RevokeRequest,
    ("v1", "auth/login"): models.LoginRequest, ("v2", "auth/login"): models.LoginRequest,
    ("v1", "info"): models.InfoRequest, ("v2", "info"): models.InfoRequest,
}
PUBLIC = ("info", "auth/login")  # every other method needs a bearer token
METHODS = sorted({method for _, method in _MODELS})


def parse_json(body: bytes) -> dict[str, Any]:
    """A JSON object, members unique; BadRequest otherwise. An empty body is ``{}`` (``info``
    may be posted without one)."""
    if not body.strip():
        return {}

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for name, value in pairs:
            if name in seen:
                raise BadRequest(f"member {name[:64]!r} is repeated")
            seen[name] = value
        return seen

    try:
        document = json.loads(body.decode("utf-8"), object_pairs_hook=unique,
                              parse_constant=_no_constant)
    except BadRequest:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise BadRequest("the body must be a JSON object")
    return document


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class CscApi:
    """One CSC service: both API versions over one credential service."""

    def __init__(self, credentials: CredentialService | None, tokens: TokenService | None = None,
                 stamper: Stamper | None = None, *, name: str = "tincay",
                 oauth2_url: str = "", logo: str = "", lang: str = "en-US",
                 description: str = "tincay remote signing") -> None:
        self.credentials = credentials
        self.tokens = tokens
        self.stamper = stamper
        self.name, self.oauth2_url, self.logo = name, oauth2_url, logo
        self.lang, self.description = lang, description

    def handle(self, version: str, method: str, caller: Any, body: bytes, *,
               basic: tuple[str, str] | None = None, requester: str | None = None) -> Answer:
        """Answer one call. ``caller`` is the authenticated client (None for ``info`` and
        ``auth/login``, whose ``basic`` is the HTTP Basic id and secret, if sent);
        ``requester`` the peer's address, which the time-stamp log records."""
        try:
            model = _MODELS.get((version, method))
            if model is None:
                return refusal(404, "invalid_request", f"no method {method[:64]!r} in CSC "
                                                      f"{version[:8]}")
            request = self._validate(model, body)
            if method == "signatures/timestamp":
                return self._signatures_timestamp(request, requester)
            return getattr(self, "_" + method.replace("/", "_"))(version, caller, request,
                                                                 basic)
        except BadRequest as exc:
            return refusal(400, "invalid_request", str(exc))
        except (BackendUnavailableError, DatabaseUnavailableError, DatabaseBusyError):
            return refusal(503, "temporarily_unavailable",
                           "the signing service is unavailable, try later",
                           (("Retry-After", "30"),))
        except InvalidTokenError as exc:  # a bearer token checked late (signHash's own)
            return refusal(401, exc.error, str(exc),
                           (("WWW-Authenticate", exc.www_authenticate()),))
        except ClientAuthError as exc:
            status = 401 if exc.error == "invalid_client" else 400
            return refusal(status, exc.error, str(exc),
                           (("WWW-Authenticate", exc.www_authenticate()),)
                           if status == 401 else ())
        except TincayError as exc:
            coded = _coded(exc)
            if coded is not None:  # ca.errors.CredentialError and its subclasses
                return refusal(coded[0], coded[1], str(exc))
            log.error("CSC %s %s refused: %s", version, method, exc)
            return refusal(500, "server_error", "the request could not be completed")
        except Exception:  # noqa: BLE001 - a bug: logged with its traceback, never sent
            log.exception("CSC %s %s failed", version, method)
            return refusal(500, "server_error", "internal error")

    @staticmethod
    def _validate(model: type[models.CscModel], body: bytes) -> Any:
        document = parse_json(body)
        try:
            return model.model_validate(document)
        except ValidationError as exc:
            first = issues(exc, model)[0]
            raise BadRequest(f"{first.path}: {first.message}" if first.path
                             else first.message) from None

    # --- the methods --------------------------------------------------------------------

    def _info(self, version: str, caller: Any, request: models.InfoRequest,
              basic: Any) -> Answer:
        return Answer(200, service_info(self, version, METHODS))

    def _auth_login(self, version: str, caller: Any, request: models.LoginRequest,
                    basic: tuple[str, str] | None) -> Answer:
        if self.tokens is None:
            return refusal(404, "invalid_request", "auth/login is not served here")
        if basic is None:
            raise InvalidClientError("HTTP Basic client authentication is required")
        grant = self.tokens.grant(*basic)
        return Answer(200, {"access_token": grant.access_token,
                            "expires_in": int(grant.expires_in)})

    def _auth_revoke(self, version: str, caller: Any, request: models.RevokeRequest,
                     basic: Any) -> Answer:
        if self.tokens is None:
            return refusal(404, "invalid_request", "auth/revoke is not served here")
        try:  # RFC 7009 2.1: only the client the token was issued to may revoke it
            owner = self.tokens.verify(request.token)
        except ClientAuthError:  # unknown, expired or already revoked: nothing to end
            owner = None
        if owner is not None and owner.client_id != getattr(caller, "client_id", None):
            raise BadRequest("token: not a token issued to this client")
        self.tokens.revoke(request.token)  # RFC 7009 2.2: an unknown token is no error
        return Answer(204, None)

    def _service(self) -> CredentialService:
        if self.credentials is None:
            raise BadRequest("remote signing is not served here")
        return self.credentials

    def _credentials_list(self, version: str, caller: Any, request: models.ListV1,
                          basic: Any) -> Answer:
        found = self._service().list_for(caller, request.userID)
        if isinstance(request, models.ListV2) and request.onlyValid:
            found = [c for c in found
                     if c.status == "active" and c.certificate_status == "valid"]
        start = 0
        if request.pageToken is not None:
            if not request.pageToken.isdigit() or int(request.pageToken) > len(found):
                raise BadRequest("pageToken: not a page token this service gave")
            start = int(request.pageToken)
        end = len(found) if request.maxResults is None else start + request.maxResults
        page = found[start:end]
        body: dict[str, Any] = {"credentialIDs": [c.credential_id for c in page]}
        if isinstance(request, models.ListV2) and request.credentialInfo:
            body["credentialInfos"] = [
                {"credentialID": c.credential_id,
                 **credential_json(c, version, request.certificates, request.certInfo,
                                   request.authInfo, self.lang)} for c in page]
        if isinstance(request, models.ListV2) and request.onlyValid:
            body["onlyValid"] = True
        if end < len(found):
            body["nextPageToken"] = str(end)
        return Answer(200, body)

    def _credentials_info(self, version: str, caller: Any,
                          request: models.CredentialInfoRequest, basic: Any) -> Answer:
        info = self._service().info_for(caller, request.credentialID)
        return Answer(200, credential_json(info, version, request.certificates,
                                           request.certInfo, request.authInfo, self.lang))

    def _credentials_authorize(self, version: str, caller: Any, request: Any,
                               basic: Any) -> Answer:
        if isinstance(request, models.AuthorizeV2):
            pin, otp = request.factor("PIN"), request.factor("OTP")
            hashes, oid = request.hashes, request.hashAlgorithmOID
        else:
            pin, otp, hashes, oid = request.PIN, request.OTP, request.hash, \
                request.hash_algorithm_oid
        if request.numSignatures < len(hashes):
            raise BadRequest(f"numSignatures: {request.numSignatures} is fewer than the "
                             f"{len(hashes)} hashes sent")
        activation = self._service().authorize(
            caller, request.credentialID, pin=pin, otp=otp, hashes=list(hashes),
            hash_algorithm_oid=oid, num_signatures=request.numSignatures)
        return Answer(200, {"SAD": activation.sad, "expiresIn": int(activation.expires_in)})

    def _credentials_extendTransaction(self, version: str, caller: Any, request: Any,
                                       basic: Any) -> Answer:
        activation = self._service().extend(caller, request.credentialID, request.SAD)
        return Answer(200, {"SAD": activation.sad, "expiresIn": int(activation.expires_in)})

    def _signatures_signHash(self, version: str, caller: Any, request: Any,
                             basic: Any) -> Answer:
        if isinstance(request, models.SignHashV2):
            if request.operationMode == "A":
                raise BadRequest("operationMode: only the synchronous mode 'S' is served")
            hashes, oid = request.hashes, request.hashAlgorithmOID
        else:
            hashes, oid = request.hash, request.hashAlgo
        if oid is None and request.signAlgo in HASHLESS_SIGN_ALGORITHMS:
            raise BadRequest(f"hashAlgo is required with signAlgo {request.signAlgo}")
        signatures = self._service().sign_hashes(
            caller, request.credentialID, request.SAD, list(hashes), oid, request.signAlgo,
            request.signAlgoParams)
        if len(signatures) != len(hashes):  # the contract: one per hash, in order
            raise TincayError("the service returned a signature count unlike the hashes'")
        return Answer(200, {"signatures": [_b64(s) for s in signatures]})

    def _signatures_timestamp(self, request: models.TimestampRequest,
                              requester: str | None) -> Answer:
        if self.stamper is None:
            return refusal(404, "invalid_request", "no time-stamp unit is configured here")
        fields: dict[str, Any] = {
            "version": 1,
            "message_imprint": {"hash_algorithm": {"algorithm": request.hashAlgo},
                                "hashed_message": request.hash},
            "cert_req": True}  # the token carries the TSA's certificate and chain
        if request.nonce is not None:
            fields["nonce"] = int(request.nonce, 16)
        question = asn1_tsp.TimeStampReq(fields).dump()
        reply = TimeStampResp.load(self.stamper(question, requester))
        status = reply["status"]["status"].native
        if status in ("granted", "granted_with_mods"):
            return Answer(200, {"timestamp": _b64(reply["time_stamp_token"].dump())})
        text = "; ".join(reply["status"]["status_string"].native or ()) or "refused"
        fail = reply["status"]["fail_info"].native or set()
        if "system_failure" in fail or "time_not_available" in fail:
            return refusal(503, "temporarily_unavailable", f"time-stamp refused: {text}",
                           (("Retry-After", "30"),))
        return refusal(400, "invalid_request", f"time-stamp refused: {text}")


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _coded(exc: Exception) -> tuple[int, str] | None:
    """(status, error) of a ca.errors.CredentialError: every subclass sets both as class
    attributes (read this way so the core names no service module)."""
    status, error = getattr(type(exc), "status", None), getattr(type(exc), "error", None)
    if isinstance(status, int) and 400 <= status < 600 and isinstance(error, str):
        return status, error
    return None
