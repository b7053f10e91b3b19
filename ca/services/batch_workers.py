"""Worker processes for ``tincay issue --batch``: the pure part of each CSR row (its checks,
the CSR's parse and signature verification, the subject, its TBSCertificate: ca.services.
batch_rows) run beside the main process, two chunks ahead of it, while the main process
keeps everything with a side effect: the claims, the database transactions and the HSM (one
PKCS#11 session per process, and that process is the main one).

Under py-spy the pure part is about 45% of a CSR row's CPU in one process (the CSR's
signature 14%, the subject 9%, the TBS 12%); on two cores a worker does it for the next chunks
while the main process commits and signs the current one, whose CPU per row falls by ~40%.

The workers are spawned (not forked: the main process holds an HSM session and database
connections a child must not inherit), each loads nothing but the profiles and the issuer's
public facts, and each exits when its parent is gone (a ``kill -9`` of the batch leaves no
process behind). A row's result is the same as in one process: a worker's refusal is the
row's error with its field; a key_type row is handed back unchecked (its key is made on the
HSM, in the main process).
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca import issuance as core
from ca.issuance import IssuerInfo, PreparedCertificate
from ca.issuance.encoding import spki
from ca.keys.base import KeySpec, SigningKey
from ca.profiles import ProfileSet
from ca.services.batch_files import RawRow, RowError, RowResult
from ca.services.batch_rows import Request, check_row, prepare_row


@dataclass(frozen=True)
class Checked:
    """What a worker sends back for a row: an error, a prepared CSR row, or (``raw`` set)
    a row for the main process to check itself."""

    number: int
    error: RowResult | None = None
    raw: RawRow | None = None
    claim: str = ""
    digest: str = ""
    profile: str = ""
    subject_text: str = ""
    emails: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    days: int | None = None
    prepared: PreparedCertificate | None = None

    def request(self, profiles: ProfileSet) -> Request:
        """The main process's Request of a prepared row (no subject object: see Request)."""
        return Request(self.number, self.claim, self.digest, profiles.get(self.profile), None,
                       self.subject_text, self.emails, self.dns_names, self.days,
                       prepared=self.prepared)


@dataclass(frozen=True)
class IssuerFacts:
    """The issuer as the workers see it: its certificate and public key, never its key."""

    name: str
    certificate_der: bytes
    key_uri: str
    key_spec: KeySpec
    spki_der: bytes
    publishes_deltas: bool

    @classmethod
    def of(cls, issuer: IssuerInfo) -> "IssuerFacts":
        assert issuer.certificate is not None  # a batch never issues a self-signed root
        return cls(issuer.name, issuer.certificate.public_bytes(serialization.Encoding.DER),
                   issuer.key.uri, issuer.key.spec, spki(issuer.key.public_key),
                   issuer.publishes_deltas)

    def issuer(self) -> IssuerInfo:
        """An IssuerInfo whose key has no private half: prepare reads only the public one."""
        public = serialization.load_der_public_key(self.spki_der)
        return IssuerInfo(self.name, x509.load_der_x509_certificate(self.certificate_der),
                          SigningKey(self.key_uri, self.key_spec, None, public),  # type: ignore[arg-type]
                          publishes_deltas=self.publishes_deltas)


Part = tuple[list[RawRow], "Future[list[Checked]]"]


class RowWorkers:
    """``count`` spawned processes checking and preparing the rows of one batch."""

    def __init__(self, count: int, profiles: ProfileSet, ca: str, issuer: IssuerInfo,
                 urls: core.Urls | None, base: Path) -> None:
        self.count = count
        self.ready = False  # a part came back: the workers are up
        self._pool = ProcessPoolExecutor(
            count, mp_context=multiprocessing.get_context("spawn"), initializer=_start,
            initargs=(os.getpid(), profiles, ca, IssuerFacts.of(issuer), urls, base))

    def submit(self, rows: list[RawRow], now: datetime) -> list[Part]:
        """``rows`` split over the workers: each part's rows and the future of its results."""
        size = -(-len(rows) // self.count)
        return [(rows[i:i + size], self._pool.submit(_check_rows, rows[i:i + size], now))
                for i in range(0, len(rows), size)]

    def collect(self, parts: list[Part], wait: bool = False) -> list[Checked | None]:
        """The results of the parts, in row order. Until the workers have answered once
        (spawning one takes 0.3-0.7 s of imports) a part not done yet is not waited for:
        None for each of its rows, which the caller checks itself (what the worker makes of
        it is dropped), so starting workers never holds a batch up. ``wait``: always wait."""
        out: list[Checked | None] = []
        for rows, future in parts:
            if wait or self.ready or future.done():
                out.extend(future.result())
                self.ready = True
            else:
                future.cancel()
                out.extend([None] * len(rows))
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# --- in the worker ------------------------------------------------------------------------

_STATE: dict[str, object] = {}


def _start(parent: int, profiles: ProfileSet, ca: str, facts: IssuerFacts,
           urls: core.Urls | None, base: Path) -> None:
    _STATE.update(profiles=profiles, ca=ca, issuer=facts.issuer(), urls=urls, base=base)
    threading.Thread(target=_orphaned, args=(parent,), daemon=True).start()


def _orphaned(parent: int) -> None:
    """End this worker once its parent is gone (killed: no shutdown message will come)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def _check_rows(rows: list[RawRow], now: datetime) -> list[Checked]:
    profiles: ProfileSet = _STATE["profiles"]  # type: ignore[assignment]
    issuer: IssuerInfo = _STATE["issuer"]  # type: ignore[assignment]
    out = []
    for raw in rows:
        try:
            request = check_row(profiles, _STATE["ca"], raw, _STATE["base"])  # type: ignore[arg-type]
        except RowError as exc:
            out.append(Checked(raw.number, RowResult(raw.number, "error", field=exc.field,
                                                     error=exc.message)))
            continue
        if request.spec is not None:  # a key_type row: the main process has the HSM
            out.append(Checked(raw.number, raw=raw))
            continue
        refused = prepare_row(request, issuer, _STATE["urls"], now)  # type: ignore[arg-type]
        if refused is not None:
            out.append(Checked(raw.number, refused))
            continue
        out.append(Checked(raw.number, None, None, request.claim, request.digest,
                           request.profile.name, request.subject_text, request.emails,
                           request.dns_names, request.days, request.prepared))
    return out
