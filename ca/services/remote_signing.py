"""Authorise and sign (CSC credentials/authorize, credentials/extendTransaction and
signatures/signHash): sole control by the signer's two factors, SADs bound to one client, one
credential and the exact hashes, and a signature log written before any signature leaves.

Sole control (SCAL2, ETSI TS 119 432): every authorisation needs the signer's PIN and a TOTP
code from the signer's device. A wrong factor counts, committed even though the call fails;
five in a row lock the credential until an operator unlocks it. A TOTP code is good for one
authorisation (its time step must be later than the last one used), within one step either
side of now.

The order that keeps "every signature recorded before it is returned": one transaction marks
each hash used (an UPDATE that only a hash not yet used satisfies, so of two racing requests
exactly one wins), counts the signatures against the SAD and inserts one signature-log row per
hash; it commits; only then does the HSM sign. If signing fails (the HSM went away), the
hashes stay used and their log rows stay, and a ``credential.sign_failed`` audit event names
the rows that got no signature: the log may list a signature never returned, never the
reverse. The client authorises again.
"""
from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any, Sequence

from cryptography import x509
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ca import settings
from ca.errors import CredentialError, InvalidOtpError, InvalidPinError, InvalidSadError
from ca.services import credential_common as common
from ca.services import sign_algorithms as algos
from ca.services.clients import ClientInfo, PendingToken
from ca.services.context import ServiceContext, as_json
from ca.services.sign_path import SignPath
from ca.services.subscriber_keys import SubscriberKeys
from ca.store import chain_store, queries
from ca.store.models import ActivationHash, ApiClient, SignatureActivation, SigningCredential

class RemoteSigning:
    """The CSC side of :class:`ca.services.credentials.Credentials`."""

    def __init__(self, context: ServiceContext, subscriber_keys: SubscriberKeys,
                 sad_lifetime: timedelta | None = None) -> None:
        self.context = context
        self.subscriber_keys = subscriber_keys
        self.sad_lifetime = sad_lifetime or settings.sad_lifetime()  # TINCAY_SAD_LIFETIME
        self.sign_path = SignPath(context)

    # --- credentials/authorize ----------------------------------------------------------

    def authorize(self, client: ClientInfo, credential_id: str, *, pin: str | None,
                  otp: str | None, hashes: Sequence[bytes], hash_algorithm_oid: str,
                  num_signatures: int) -> common.Activation:
        """A SAD for exactly ``hashes``, good for ``num_signatures`` signatures, after the
        signer's PIN and OTP were both checked."""
        digests = algos.check_hashes(hashes, hash_algorithm_oid)
        now = self.context.clock.now()
        failure: CredentialError | None = None
        with self.context.transaction() as session:
            api = common.client_row(session, client)
            row = common.granted(session, api, credential_id)
            common.usable(row, now)
            if not 1 <= len(digests) <= row.multisign:
                raise CredentialError(f"between 1 and {row.multisign} hashes per authorisation")
            if len(set(digests)) != len(digests):
                raise CredentialError("the same hash is given twice")
            if (isinstance(num_signatures, bool) or not isinstance(num_signatures, int)
                    or not 1 <= num_signatures <= len(digests)):
                raise CredentialError("numSignatures must be between 1 and the number of hashes")
            if not pin:
                raise InvalidPinError("the PIN is required")
            if not otp:
                raise InvalidOtpError("the OTP is required")
            failure = self._check_factors(session, row, api, pin, otp, now)
            if failure is None:
                sad = self._activate(session, row, api, digests, hash_algorithm_oid,
                                     num_signatures, now)
                queries.record_event(
                    session, at=now, action="credential.authorize",
                    authority=row.certificate.issuer.name, serial_hex=row.certificate.serial_hex,
                    details=as_json({"credential_id": row.credential_id, "client": api.name,
                                     "hashes": len(digests), "num_signatures": num_signatures,
                                     "hash_algorithm": hash_algorithm_oid}))
                key_uri, der = row.certificate.key_uri or "", row.certificate.der or b""
        if failure is not None:
            raise failure  # after the commit: the failed attempt is counted
        self._warm(key_uri, der, num_signatures)
        return common.Activation(sad, int(self.sad_lifetime.total_seconds()))

    def _warm(self, key_uri: str, certificate_der: bytes, num_signatures: int) -> None:
        """Unwrap the key now, for the signHash calls the SAD is for: an unwrap costs the HSM
        about as much as several signatures (bench/subscriber_keys.py), and a signer's
        application signs right after it authorised. In this worker (often the same
        connection's), and in up to ``num_signatures - 1`` of the host's other workers
        (ca.services.key_peers), where the SAD's other signatures may land. A key that cannot
        be made ready is left to signHash, which reports it."""
        try:
            public: Any = x509.load_der_x509_certificate(certificate_der).public_key()
        except ValueError:
            return
        self.subscriber_keys.warm(key_uri, public, peers=num_signatures - 1)

    def _check_factors(self, session: Session, row: SigningCredential, api: ApiClient,
                       pin: str, otp: str, now: datetime) -> CredentialError | None:
        """None when both factors are right (the OTP's step then claimed, the count reset);
        otherwise the error to raise after the failed attempt has been counted."""
        if not common.pin_matches(row.pin_hash, pin):
            return self._failed(session, row, api, now, InvalidPinError("wrong PIN"), "pin")
        seed = common.unseal_seed(self.context.keys, row.otp_sealed, row.credential_id)
        step = common.otp_step(seed, otp, now, row.otp_last_step)
        if step is None:
            return self._failed(session, row, api, now,
                                InvalidOtpError("wrong or already used OTP"), "otp")
        claimed = session.execute(update(SigningCredential).where(
            SigningCredential.id == row.id, SigningCredential.otp_last_step < step)
            .values(otp_last_step=step, failed_attempts=0)).rowcount
        if claimed != 1:  # a concurrent authorisation used this code first
            return self._failed(session, row, api, now,
                                InvalidOtpError("wrong or already used OTP"), "otp")
        return None

    def _failed(self, session: Session, row: SigningCredential, api: ApiClient, now: datetime,
                error: CredentialError, factor: str) -> CredentialError:
        session.execute(update(SigningCredential).where(SigningCredential.id == row.id)
                        .values(failed_attempts=SigningCredential.failed_attempts + 1))
        session.refresh(row)
        queries.record_event(session, at=now, action="credential.auth_failed",
                             authority=row.certificate.issuer.name,
                             serial_hex=row.certificate.serial_hex,
                             details=as_json({"credential_id": row.credential_id,
                                              "client": api.name, "factor": factor,
                                              "failed_attempts": row.failed_attempts}))
        if row.failed_attempts >= common.MAX_FAILED_ATTEMPTS and row.locked_at is None:
            row.locked_at = now
            queries.record_event(session, at=now, action="credential.lock",
                                 authority=row.certificate.issuer.name,
                                 serial_hex=row.certificate.serial_hex,
                                 details=as_json({"credential_id": row.credential_id,
                                                  "failed_attempts": row.failed_attempts}))
        return error

    def _activate(self, session: Session, row: SigningCredential, api: ApiClient,
                  digests: Sequence[bytes] | Sequence[str], hash_algorithm_oid: str,
                  num_signatures: int, now: datetime) -> str:
        sad = secrets.token_urlsafe(32)
        activation = SignatureActivation(
            sad_hash=common.sad_digest(sad), credential_pk=row.id, client_pk=api.id,
            status="authorized", hash_algorithm_oid=hash_algorithm_oid,
            num_signatures=num_signatures, signatures_used=0, created_at=now,
            expires_at=now + self.sad_lifetime)
        session.add(activation)
        session.flush()
        session.add_all(ActivationHash(activation_pk=activation.id,
                                       hash_hex=d if isinstance(d, str) else d.hex())
                        for d in digests)
        session.flush()
        return sad

    def _activation(self, session: Session, api: ApiClient, row: SigningCredential, sad: str,
                    now: datetime) -> SignatureActivation:
        """The live SAD of this client for this credential; one refusal for every other."""
        activation = session.scalar(select(SignatureActivation).where(
            SignatureActivation.sad_hash == common.sad_digest(sad)))
        if (activation is None or activation.client_pk != api.id
                or activation.credential_pk != row.id or activation.revoked_at is not None
                or activation.status != "authorized"):
            raise InvalidSadError("the SAD is not valid for this credential")
        if activation.expires_at <= now:
            raise InvalidSadError("the SAD has expired")
        if activation.signatures_used >= activation.num_signatures:
            raise InvalidSadError("the SAD is used up")
        return activation

    # --- credentials/extendTransaction ----------------------------------------------------

    def extend(self, client: ClientInfo, credential_id: str, sad: str) -> common.Activation:
        """A new SAD for the hashes and signatures the old one has left; the old one ends."""
        now = self.context.clock.now()
        with self.context.transaction() as session:
            api = common.client_row(session, client)
            row = common.granted(session, api, credential_id)
            common.usable(row, now)
            old = self._activation(session, api, row, sad, now)
            ended = session.execute(update(SignatureActivation).where(
                SignatureActivation.id == old.id, SignatureActivation.revoked_at.is_(None))
                .values(revoked_at=now)).rowcount
            session.refresh(old)
            left = list(session.scalars(select(ActivationHash.hash_hex).where(
                ActivationHash.activation_pk == old.id, ActivationHash.used_at.is_(None))))
            remaining = min(old.num_signatures - old.signatures_used, len(left))
            if ended != 1 or remaining <= 0:
                raise InvalidSadError("the SAD is not valid for this credential")
            new_sad = self._activate(session, row, api, left, old.hash_algorithm_oid,
                                     remaining, now)
            queries.record_event(session, at=now, action="credential.extend",
                                 authority=row.certificate.issuer.name,
                                 serial_hex=row.certificate.serial_hex,
                                 details=as_json({"credential_id": row.credential_id,
                                                  "client": api.name, "hashes": len(left),
                                                  "num_signatures": remaining}))
        return common.Activation(new_sad, int(self.sad_lifetime.total_seconds()))

    # --- signatures/signHash --------------------------------------------------------------

    def sign_hashes(self, client: ClientInfo | PendingToken, credential_id: str, sad: str,
                    hashes: Sequence[bytes], hash_algorithm_oid: str | None,
                    sign_algorithm_oid: str, sign_parameters: bytes | None = None) -> list[bytes]:
        """One signature per hash, in order, each in the signature log before it is returned
        (see the module's docstring for the order and what a failed signing leaves).

        A request that passes takes the hot path (ca.services.sign_path: one transaction of
        prebuilt statements, which checks a PendingToken too); any other gets its refusal
        from the ORM path below, after the token's own (InvalidTokenError, ExpiredTokenError)."""
        now = self.context.clock.now()
        granted = self.sign_path.grant(client, credential_id, sad, hashes, hash_algorithm_oid,
                                       sign_algorithm_oid, sign_parameters, now)
        if granted is not None:
            return self._sign(granted.key_uri, granted.public_key, granted.scheme,
                              granted.digests, credential_id, granted.client,
                              granted.authority, granted.serial_hex, granted.record_ids)
        if isinstance(client, PendingToken):
            client = client.client()
        with self.context.transaction() as session:
            api = common.client_row(session, client)
            row = common.granted(session, api, credential_id)
            common.usable(row, now)
            activation = self._activation(session, api, row, sad, now)
            certificate = row.certificate
            public: Any = x509.load_der_x509_certificate(certificate.der or b"").public_key()
            scheme = algos.scheme(public, sign_algorithm_oid, hash_algorithm_oid,
                                  sign_parameters, activation.hash_algorithm_oid)
            digests = algos.check_hashes(hashes, scheme.hash_oid)
            if not digests:
                raise CredentialError("no hash to sign")
            self._consume(session, activation, digests, now)
            records: list[dict[str, Any]] = [dict(
                at=now, credential_id=row.credential_id, user_id=row.user_id, client=api.name,
                authority=certificate.issuer.name, serial_hex=certificate.serial_hex,
                hash_hex=d.hex(), hash_algorithm_oid=scheme.hash_oid,
                sign_algorithm_oid=sign_algorithm_oid, activation_pk=activation.id)
                for d in digests]
            # chained last in the transaction, which commits right after (chain_store)
            record_ids = chain_store.append_now(session, "signatures", records)
            key_uri, authority, serial = certificate.key_uri, certificate.issuer.name, \
                certificate.serial_hex
        return self._sign(key_uri or "", public, scheme, digests, credential_id, client.name,
                          authority, serial, record_ids)

    def _sign(self, key_uri: str, public: Any, scheme: Any, digests: Sequence[bytes],
              credential_id: str, client_name: str, authority: str, serial: str,
              record_ids: list[int]) -> list[bytes]:
        """The HSM's signatures of the recorded ``digests``; a failure is audited."""
        signatures: list[bytes] = []
        try:  # a cold key unwraps at its first signature, which checks it
            signer = self.subscriber_keys.signer(key_uri, public, unwrap_now=False)
            for digest in digests:
                signatures.append(scheme.sign(signer.private_key, digest))
        except Exception as exc:
            self._sign_failed(credential_id, api_name=client_name, authority=authority,
                              serial=serial, record_ids=record_ids[len(signatures):], error=exc)
            raise
        return signatures

    def _consume(self, session: Session, activation: SignatureActivation,
                 digests: Sequence[bytes], now: datetime) -> None:
        """Mark each hash used and count the signatures: conditional UPDATEs, so of two
        requests racing for one hash exactly one succeeds (the loser's transaction rolls
        back whatever it had marked)."""
        for digest in digests:
            if session.execute(update(ActivationHash).where(
                    ActivationHash.activation_pk == activation.id,
                    ActivationHash.hash_hex == digest.hex(),
                    ActivationHash.used_at.is_(None)).values(used_at=now)).rowcount != 1:
                raise InvalidSadError("the SAD does not cover this hash, or it was signed already")
        counted = session.execute(update(SignatureActivation).where(
            SignatureActivation.id == activation.id, SignatureActivation.revoked_at.is_(None),
            SignatureActivation.signatures_used + len(digests)
            <= SignatureActivation.num_signatures)
            .values(signatures_used=SignatureActivation.signatures_used + len(digests))).rowcount
        if counted != 1:
            raise InvalidSadError("the SAD does not allow that many more signatures")

    def _sign_failed(self, credential_id: str, *, api_name: str, authority: str, serial: str,
                     record_ids: list[int], error: Exception) -> None:
        try:
            with self.context.transaction() as session:
                queries.record_event(session, at=self.context.clock.now(),
                                     action="credential.sign_failed", authority=authority,
                                     serial_hex=serial,
                                     details=as_json({"credential_id": credential_id,
                                                      "client": api_name,
                                                      "unsigned_records": record_ids,
                                                      "error": type(error).__name__}))
        except Exception:  # noqa: BLE001 - the signing error is the one to report
            pass
