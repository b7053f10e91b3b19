"""Remote-signing credentials (issue 20): a certificate whose key is on the HSM, bound to its
holder and to the clients that may drive it, activated only by the holder's PIN and TOTP.

The operator enrols (``tincay credential create``: the PIN from a file or a prompt, the TOTP
seed made here, sealed under an HSM key and shown once as an otpauth:// URI for the signer's
authenticator app), lists, disables, unlocks and resets credentials, and reads the signature
log. The CSC API lists and describes only the credentials granted to the calling client, and
authorises and signs through :mod:`ca.services.remote_signing`.

No PIN, OTP, seed, URI or SAD is ever put in an audit event or a log record.
"""
from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta
from typing import Sequence

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from ca.errors import (CredentialDisabledError, CredentialError, CredentialNotFoundError,
                       CredentialRequestError, NotFoundError)
from ca.services import credential_common as common
from ca.services import sign_algorithms as algos
from ca.services.clients import ClientInfo, PendingToken
from ca.services.context import ServiceContext, as_json
from ca.services.credential_common import Activation, CredentialInfo, SignatureRecordInfo
from ca.services.remote_signing import RemoteSigning
from ca.services.subscriber_keys import SubscriberKeys
from ca.store import queries
from ca.store.models import (ISSUED, ApiClient, Authority, Certificate, CredentialClient,
                             SignatureRecord, SigningCredential)

__all__ = ["Activation", "CredentialInfo", "Credentials", "SignatureRecordInfo"]

_USER_ID = re.compile(r"^\S(.{0,126}\S)?$")


class Credentials:
    """Enrol and manage remote-signing credentials; list, authorise and sign for clients."""

    def __init__(self, context: ServiceContext, subscriber_keys: SubscriberKeys | None = None,
                 sad_lifetime: timedelta | None = None) -> None:
        self.context = context
        self.remote = RemoteSigning(context, subscriber_keys or SubscriberKeys(context),
                                    sad_lifetime)

    # --- the CSC API side ---------------------------------------------------------------

    def list_for(self, client: ClientInfo, user_id: str | None = None) -> list[CredentialInfo]:
        """The credentials granted to ``client`` (of ``user_id`` only, if given)."""
        now = self.context.clock.now()
        with self.context.read() as session:
            api = common.client_row(session, client)
            query = (select(SigningCredential)
                     .join(CredentialClient, CredentialClient.credential_pk == SigningCredential.id)
                     .where(CredentialClient.client_pk == api.id))
            if user_id is not None:
                query = query.where(SigningCredential.user_id == user_id)
            return [common.describe(row, now)
                    for row in session.scalars(query.order_by(SigningCredential.id))]

    def info_for(self, client: ClientInfo, credential_id: str) -> CredentialInfo:
        with self.context.read() as session:
            row = common.granted(session, common.client_row(session, client), credential_id)
            return common.describe(row, self.context.clock.now())

    def authorize(self, client: ClientInfo, credential_id: str, *, pin: str | None,
                  otp: str | None, hashes: Sequence[bytes], hash_algorithm_oid: str,
                  num_signatures: int) -> Activation:
        """CSC credentials/authorize (ca/services/remote_signing.py)."""
        return self.remote.authorize(client, credential_id, pin=pin, otp=otp, hashes=hashes,
                                     hash_algorithm_oid=hash_algorithm_oid,
                                     num_signatures=num_signatures)

    def extend(self, client: ClientInfo, credential_id: str, sad: str) -> Activation:
        """CSC credentials/extendTransaction: a new SAD, the old one invalid."""
        return self.remote.extend(client, credential_id, sad)

    def sign_hashes(self, client: ClientInfo | PendingToken, credential_id: str, sad: str,
                    hashes: Sequence[bytes], hash_algorithm_oid: str | None,
                    sign_algorithm_oid: str, sign_parameters: bytes | None = None) -> list[bytes]:
        """CSC signatures/signHash: one signature per hash, each logged durably first."""
        return self.remote.sign_hashes(client, credential_id, sad, hashes, hash_algorithm_oid,
                                       sign_algorithm_oid, sign_parameters)

    # --- the operator side ----------------------------------------------------------------

    def create(self, serial_hex: str, user_id: str, clients: Sequence[str], pin: str, *,
               authority: str | None = None, multisign: int = 100
               ) -> tuple[CredentialInfo, str]:
        """Enrol the certificate ``serial_hex`` (issued, valid, its key on this backend) for
        ``user_id``, driven by ``clients``; returns the credential and the otpauth:// URI,
        which exists nowhere else afterwards."""
        self.check_new(user_id, clients, pin, multisign)
        now = self.context.clock.now()
        credential_id = secrets.token_hex(16)
        pin_hash = common.hash_pin(pin)
        seed = common.new_otp_seed()
        with self.context.transaction() as session:
            certificate = self._certificate(session, serial_hex, authority, now)
            algos.key_algorithm_oid(x509.load_der_x509_certificate(
                certificate.der or b"").public_key())  # type: ignore[arg-type]
            api_rows = [self._client(session, name) for name in dict.fromkeys(clients)]
            row = SigningCredential(
                credential_id=credential_id, user_id=user_id, certificate_id=certificate.id,
                status="active", pin_hash=pin_hash,
                otp_sealed=common.seal_seed(self.context.keys, seed, credential_id),
                otp_last_step=0, failed_attempts=0, multisign=multisign, created_at=now)
            row.clients = api_rows
            session.add(row)
            session.flush()
            queries.record_event(session, at=now, action="credential.create",
                                 authority=certificate.issuer.name,
                                 serial_hex=certificate.serial_hex, subject=certificate.subject,
                                 details=as_json({"credential_id": credential_id,
                                                  "user_id": user_id, "multisign": multisign,
                                                  "clients": [c.name for c in api_rows]}))
            return common.describe(row, now), common.otpauth_uri(seed, user_id)

    def check_new(self, user_id: str, clients: Sequence[str], pin: str,
                  multisign: int = 100) -> None:
        """The rules a new credential's data must meet, checked before anything is written
        (the registration API checks them before it issues the certificate the credential
        is for): CredentialRequestError naming the field at fault."""
        try:
            common.check_pin_rules(pin)
        except ValueError as exc:
            raise CredentialRequestError(str(exc), "pin") from None
        if not isinstance(user_id, str) or not _USER_ID.match(user_id):
            raise CredentialRequestError("the user id must be 1 to 128 characters, without "
                                         "surrounding spaces", "user_id")
        if not clients:
            raise CredentialRequestError("name at least one client that may use the "
                                         "credential", "clients")
        if not 1 <= multisign <= 1000:
            raise CredentialRequestError("multisign must be between 1 and 1000", "multisign")
        with self.context.read() as session:
            for name in clients:
                try:
                    self._client(session, name)
                except NotFoundError as exc:
                    raise CredentialRequestError(str(exc), "clients") from None

    def for_certificate(self, authority: str, serial_hex: str) -> CredentialInfo | None:
        """The credential enrolled for ``authority``'s certificate ``serial_hex``, if any."""
        now = self.context.clock.now()
        with self.context.read() as session:
            row = session.scalar(select(SigningCredential).join(
                Certificate, Certificate.id == SigningCredential.certificate_id).join(
                Authority, Authority.id == Certificate.issuer_id).where(
                Authority.name == authority, Certificate.serial_hex == serial_hex))
            return None if row is None else common.describe(row, now)

    def _certificate(self, session: Session, serial_hex: str, authority: str | None,
                     now: datetime) -> object:
        if authority is not None:
            certificate = queries.get_certificate(
                session, queries.get_authority(session, authority), serial_hex)
        else:
            found = queries.certificates_by_serial(session, serial_hex)
            if not found:
                raise NotFoundError(f"no certificate with serial {serial_hex}")
            if len(found) > 1:
                raise CredentialError(f"several CAs issued serial {serial_hex}: name the CA")
            certificate = found[0]
        if certificate.status != ISSUED:
            raise CredentialDisabledError(
                f"certificate {certificate.serial_hex} is {certificate.status}, not issued")
        if not certificate.not_before <= now <= certificate.not_after:
            raise CredentialDisabledError(
                f"certificate {certificate.serial_hex} is not valid now")
        if not certificate.key_uri:
            raise CredentialError(f"certificate {certificate.serial_hex} was issued from a CSR: "
                                  "its key is not on this HSM, so it cannot sign remotely")
        if session.scalar(select(SigningCredential.id).where(
                SigningCredential.certificate_id == certificate.id,
                SigningCredential.status == "active")) is not None:
            raise CredentialError(f"certificate {certificate.serial_hex} already has an "
                                  "active credential")
        return certificate

    @staticmethod
    def _client(session: Session, name: str) -> ApiClient:
        row = session.scalar(select(ApiClient).where(
            (ApiClient.name == name) | (ApiClient.client_id == name)))
        if row is None:
            raise NotFoundError(f"no client named {name}")
        return row

    def list_all(self, user_id: str | None = None) -> list[CredentialInfo]:
        now = self.context.clock.now()
        with self.context.read() as session:
            query = select(SigningCredential).order_by(SigningCredential.id)
            if user_id is not None:
                query = query.where(SigningCredential.user_id == user_id)
            return [common.describe(row, now) for row in session.scalars(query)]

    def show(self, credential_id: str) -> CredentialInfo:
        with self.context.read() as session:
            return common.describe(self._row(session, credential_id), self.context.clock.now())

    def disable(self, credential_id: str) -> CredentialInfo:
        """Refuse every authorisation and signature from now on (SADs already issued too)."""
        return self._change(credential_id, "credential.disable", status="disabled")

    def unlock(self, credential_id: str) -> CredentialInfo:
        """Lift a lock after five failures (the count starts again from zero)."""
        return self._change(credential_id, "credential.unlock", unlock=True)

    def reset(self, credential_id: str, *, pin: str | None = None, new_otp: bool = False
              ) -> tuple[CredentialInfo, str | None]:
        """A new PIN and/or a new TOTP seed (the signer lost either); the new otpauth:// URI
        when the seed changed. Also clears the failure count."""
        if pin is None and not new_otp:
            raise ValueError("give a new PIN, a new OTP seed, or both")
        if pin is not None:
            common.check_pin_rules(pin)
        seed = common.new_otp_seed() if new_otp else None
        info = self._change(credential_id, "credential.reset",
                            pin_hash=common.hash_pin(pin) if pin is not None else None,
                            seed=seed)
        return info, common.otpauth_uri(seed, info.user_id) if seed is not None else None

    def _change(self, credential_id: str, action: str, *, status: str | None = None,
                unlock: bool = False, pin_hash: str | None = None,
                seed: bytes | None = None) -> CredentialInfo:
        now = self.context.clock.now()
        with self.context.transaction() as session:
            row = self._row(session, credential_id)
            details: dict[str, object] = {"credential_id": row.credential_id}
            if status is not None:
                row.status = status
            if unlock or pin_hash is not None or seed is not None:
                details["failed_attempts"] = row.failed_attempts
                row.failed_attempts, row.locked_at = 0, None
            if pin_hash is not None:
                row.pin_hash = pin_hash
                details["pin"] = "changed"
            if seed is not None:
                row.otp_sealed = common.seal_seed(self.context.keys, seed, row.credential_id)
                row.otp_last_step = 0
                details["otp"] = "new seed"
            session.flush()
            queries.record_event(session, at=now, action=action,
                                 authority=row.certificate.issuer.name,
                                 serial_hex=row.certificate.serial_hex, details=as_json(details))
            return common.describe(row, now)

    @staticmethod
    def _row(session: Session, credential_id: str) -> SigningCredential:
        row = session.scalar(select(SigningCredential).where(
            SigningCredential.credential_id == credential_id))
        if row is None:
            raise CredentialNotFoundError(f"no credential {credential_id}")
        return row

    def signatures(self, *, since: datetime | None = None, user_id: str | None = None,
                   limit: int = 1000) -> list[SignatureRecordInfo]:
        """The signature log, newest first."""
        with self.context.read() as session:
            query = select(SignatureRecord)
            if since is not None:
                query = query.where(SignatureRecord.at >= since)
            if user_id is not None:
                query = query.where(SignatureRecord.user_id == user_id)
            rows = session.scalars(query.order_by(SignatureRecord.at.desc(),
                                                  SignatureRecord.id.desc()).limit(limit))
            return [SignatureRecordInfo(r.at, r.credential_id, r.user_id, r.client, r.authority,
                                        r.serial_hex, r.hash_hex, r.hash_algorithm_oid,
                                        r.sign_algorithm_oid) for r in rows]
