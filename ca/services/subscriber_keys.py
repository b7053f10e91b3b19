"""Subscribers' keys: generated in the HSM, stored wrapped in the database, unwrapped to sign.

``tincay issue --generate-key`` used to make one token object per subscriber, and SoftHSM's
file store reads every object at each lookup (2,000 issuances ran at 3/s, slower each 500).
Here each end-entity key is wrapped under the HSM's key-encryption key (ca.keys.wrapping) the
moment it is made and kept as a ``subscriber_keys`` row; certificates name it
``tincay:subscriber-key:<id>``. CA, OCSP and TSA keys stay token objects (ca.services.
authorities), and certificates whose key_uri is a ``pkcs11:`` URI (subscribers' keys made
before) keep signing through :meth:`SubscriberKeys.signer` too.

Each process keeps at most TINCAY_KEY_CACHE (default 1000) keys unwrapped: the HSM's session
objects (ca.keys.wrapping, destroyed when evicted) and here the rows' signers, so a busy
remote-signing worker reads a key's row and unwraps it once, not at each signature. A key
about to sign (an authorisation's) is unwrapped ahead by :meth:`SubscriberKeys.warm`, in this
worker and, through ca.services.key_peers, in some of the host's other workers.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from functools import cached_property
from typing import Sequence

from cryptography.hazmat.primitives import serialization
from sqlalchemy import bindparam, select

from ca.errors import KeyBackendError, KeyNotFoundError
from ca.keys.base import KeySpec, KeyWrapping, PublicKey, SigningKey
from ca.keys.pkcs11_session import public_key_der
from ca.keys.uri import wrapped_key_id, wrapped_uri
from ca.keys.wrapping import key_wrapping
from ca.services.context import ServiceContext, as_json
from ca.services.key_peers import KeyPeers
from ca.settings import key_cache_size
from ca.store import queries
from ca.store.hot import HotQuery
from ca.store.models import SubscriberKey


class _Cached:
    """A signer kept for a wrapped key, and the last public key object it was found to match
    (compared by identity, so a certificate's key is serialised and compared once)."""

    __slots__ = ("key", "matched")

    def __init__(self, key: SigningKey) -> None:
        self.key = key
        self.matched: PublicKey | None = None


class SubscriberKeys:
    """Generates subscribers' keys wrapped under the KEK, and hands out signers for them."""

    def __init__(self, context: ServiceContext, cache_size: int | None = None) -> None:
        self.context = context
        self.cache_size = cache_size or key_cache_size()
        self._wrapping: KeyWrapping | None = None
        self._lock = threading.Lock()
        self._signers: OrderedDict[int, _Cached] = OrderedDict()  # least recent first
        self._peers: KeyPeers | None = None

    @property
    def wrapping(self) -> KeyWrapping:
        """The key backend's wrapping (the HSM's KEK), made on first use."""
        with self._lock:
            if self._wrapping is None:
                self._wrapping = key_wrapping(self.context.keys, self.cache_size)
            return self._wrapping

    def generate(self, spec: KeySpec, *, authority: str) -> SigningKey:
        """A new subscriber key of ``spec``, stored wrapped; its ``key.generate`` audit event
        (with the key's URI and id, for ``tincay reconcile``) in the same transaction as its
        row. The signer unwraps at its first signature: issuance needs only the public key."""
        return self.generate_many([spec], authority=authority)[0]

    def generate_many(self, specs: Sequence[KeySpec], *, authority: str) -> list[SigningKey]:
        """:meth:`generate` for each of ``specs``, their rows and events in one transaction
        (``tincay issue --batch``: one commit, one fsync, per chunk of rows, not per key)."""
        context, wrapping = self.context, self.wrapping
        made = [(spec, *wrapping.generate(spec)) for spec in specs]
        keys = []
        with context.transaction() as session:
            for spec, public, blob in made:
                row = SubscriberKey(kek_label=wrapping.kek_label, spec=str(spec),
                                    public_key_der=public_key_der(public), wrapped=blob,
                                    created_at=context.clock.now())
                session.add(row)
                session.flush()
                key_id, uri = row.id, wrapped_uri(row.id)
                queries.record_event(session, at=context.clock.now(), action="key.generate",
                                     authority=authority,
                                     details=as_json({"key_uri": uri, "spec": str(spec),
                                                      "key_id": key_id, "wrapped": True}))
                keys.append(SigningKey(uri, spec, wrapping.unwrap(blob, spec, public,
                                                                  now=False), public))
        return keys

    def signer(self, key_uri: str, public: PublicKey | None = None, *,
               unwrap_now: bool = True) -> SigningKey:
        """The key a certificate's ``key_uri`` names, ready to sign: a wrapped key (its row
        read and unwrapped once per process, then cached) or a token object (``pkcs11:`` or a
        label, through the key backend). ``public``: the certificate's public key; a key
        that is not its key is refused (KeyBackendError). ``unwrap_now=False`` (signHash):
        a wrapped key is unwrapped at its first signature, which is then verified against
        the public key instead of a test signature made on the HSM first."""
        key_id = wrapped_key_id(key_uri)
        if key_id is None:
            return self.context.keys.load(key_uri, public)
        with self._lock:
            entry = self._signers.get(key_id)
            if entry is not None:
                self._signers.move_to_end(key_id)
        if entry is None:
            entry = _Cached(self._load(key_id, key_uri, public, unwrap_now))
            entry.matched = public
            with self._lock:
                self._signers[key_id] = entry
                while len(self._signers) > self.cache_size:
                    self._signers.popitem(last=False)
        if public is not None and public is not entry.matched:
            if public_key_der(public) != public_key_der(entry.key.public_key):
                raise KeyBackendError(f"key {key_uri} is not the key of the certificate it "
                                      "was loaded for")
            entry.matched = public  # the signHash path hands the same parsed key each time
        return entry.key

    def warm(self, key_uri: str, public: PublicKey, *, peers: int = 0) -> None:
        """Unwrap ``key_uri``'s key now, checked against ``public``, for signatures about to
        come (an authorisation's), and name it to at most ``peers`` of the host's other
        workers (:meth:`join_peers`), which unwrap it too. A key that cannot be made ready is
        left to the signature, which reports what is wrong."""
        try:
            self.signer(key_uri, public)
        except Exception:  # noqa: BLE001 - signHash meets the same failure and answers it
            return
        if self._peers is not None and wrapped_key_id(key_uri) is not None:
            self._peers.announce(key_uri, peers)

    def join_peers(self, peers: KeyPeers) -> None:
        """Take part in the host's warm-ups (`tincay serve`'s workers): keys other workers
        name are unwrapped here, and :meth:`warm` names keys to them."""
        self._peers = peers
        peers.listen(lambda key_uri: self.signer(key_uri))

    def _load(self, key_id: int, key_uri: str, public: PublicKey | None,
              unwrap_now: bool) -> SigningKey:
        """The row read (one prebuilt query, no ORM session: signHash's cold keys) and its
        key unwrapped; ``public``, when given, must be the row's public key."""
        row = self._row_query.first({"key_id": key_id})
        if row is None:
            raise KeyNotFoundError(f"no subscriber key {key_uri}")
        kek_label, spec_text, der, blob = row
        wrapping = self.wrapping
        if kek_label != wrapping.kek_label:
            raise KeyBackendError(f"key {key_uri} is wrapped under {kek_label!r}, not under "
                                  f"this backend's {wrapping.kek_label!r}")
        if public is None:
            public = serialization.load_der_public_key(der)  # type: ignore[assignment]
        elif public_key_der(public) != der:
            raise KeyBackendError(f"key {key_uri} is not the key of the certificate it was "
                                  "loaded for")
        assert public is not None
        spec = KeySpec.parse(spec_text)
        return SigningKey(key_uri, spec, wrapping.unwrap(blob, spec, public, now=unwrap_now),
                          public)

    @cached_property
    def _row_query(self) -> HotQuery:
        k = SubscriberKey
        return self.context.hot_query(select(k.kek_label, k.spec, k.public_key_der, k.wrapped)
                                      .where(k.id == bindparam("key_id")))

    def exists(self, key_uri: str) -> bool:
        """Whether ``key_uri`` names a stored wrapped key."""
        key_id = wrapped_key_id(key_uri)
        if key_id is None:
            return False
        with self.context.read() as session:
            return session.get(SubscriberKey, key_id) is not None

    def destroy(self, key_uri: str) -> bool:
        """Delete a wrapped key's row (no certificate uses it: ``tincay reconcile``); whether
        there was one. Without its blob the key is gone for good: the KEK alone holds nothing.
        The caller records the ``key.destroy`` event."""
        key_id = wrapped_key_id(key_uri)
        if key_id is None:
            return False
        with self._lock:
            self._signers.pop(key_id, None)
        with self.context.transaction() as session:
            row = session.get(SubscriberKey, key_id)
            if row is None:
                return False
            session.delete(row)
        return True

    def close(self) -> None:
        """Destroy this process's unwrapped session objects."""
        peers, self._peers = self._peers, None
        if peers is not None:
            peers.close()
        with self._lock:
            self._signers.clear()
            wrapping, self._wrapping = self._wrapping, None
        if wrapping is not None:
            wrapping.close()
