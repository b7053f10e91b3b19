"""Keys at the scale of a province (issue 20): N end-entity certificates issued with keys
generated in the HSM, each wrapped under the HSM's key-encryption key (ca.keys.wrapping)
instead of stored as a token object.

One token object per subscriber slowed down with every 500 keys on SoftHSM (its file store
reads every object at each lookup: 2,000 issuances ran at 3/s). What this measures, in one
process on a fresh SoftHSM token and SQLite database:

- the issuance rate (key generated, wrapped, stored; certificate persisted, signed by the
  CA's token key, recorded) over the first and the last 10% of the N issuances, and their
  ratio (flat means about 1.0);
- the same per second of the process's CPU time (SoftHSM runs in it), which the other
  processes of a shared machine disturb less than wall time;
- the token's object count before and after (it must not grow);
- the peak RSS of the process;
- the latency of ``SubscriberKeys.signer(uri)`` plus one ECDSA signature for a key picked at
  random, when few keys exist (after the first 10%) and when all N exist: cold (a fresh
  service: the row read and the key unwrapped) and warm (the same keys again, cached), median
  of 200 each, and the ratio of the two phases.

The baseline, in the same run and on the same token: N/10 issuances (at most 1,000;
``BENCH_SUBSCRIBER_KEYS_BASELINE``) with a token object per key (``--key-storage token``), the
way subscriber keys were kept before; its first and last 10%, and the wrapped keys' rate
over their last 10% against the baseline's.

N: 100,000 (``--quick``: 10,000); ``BENCH_SUBSCRIBER_KEYS=2000`` for a smaller run.
"""
from __future__ import annotations

import hashlib
import os
import random
import resource
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

REPO = Path(__file__).resolve().parent.parent
SAMPLES = 200
SUBJECT = "C=VN, O=Bệnh viện Quận 11, CN=Nguyễn Văn A, UID=CCCD:079073009568"


def _latency(service: Any, uris: list[str], rng: random.Random) -> tuple[float, float]:
    """Median seconds of signer(uri) + one signature, cold then warm, over SAMPLES keys."""
    from ca.services.subscriber_keys import SubscriberKeys

    keys = SubscriberKeys(service.context)  # a fresh per-process cache
    picked = rng.sample(uris, min(SAMPLES, len(uris)))  # distinct: cold means unwrapped
    digest = hashlib.sha256(b"a document to sign").digest()
    algorithm = ec.ECDSA(utils.Prehashed(hashes.SHA256()))
    timings = []
    for rounds in range(2):
        times = []
        for uri in picked:
            t0 = time.perf_counter()
            keys.signer(uri).private_key.sign(digest, algorithm)  # type: ignore[call-arg]
            times.append(time.perf_counter() - t0)
        timings.append(statistics.median(times))
    keys.close()
    return timings[0], timings[1]


def _rates(service: Any, n: int, source: Any, subject: Any) -> tuple[float, float, list[str]]:
    """Issue ``n`` certificates; the rates over the first and the last 10%, and the key URIs."""
    tenth = max(1, n // 10)
    uris: list[str] = []
    marks = [time.perf_counter()]
    for i in range(n):
        uris.append(service.issuance.issue("ca", "clinician", subject, source, days=30).key_uri
                    or "")
        if i + 1 in (tenth, n - tenth, n):
            marks.append(time.perf_counter())
    return tenth / (marks[1] - marks[0]), tenth / (marks[-1] - marks[-2]), uris


def fresh_token(home: Path, label: str) -> str:
    """A new SoftHSM token ``label`` in ``home`` (this process's SOFTHSM2_CONF); its PIN."""
    from ca.keys import softhsm

    conf = softhsm.write_config(home)
    os.environ["SOFTHSM2_CONF"] = str(conf)  # read when the SoftHSM library loads
    pin = secrets.token_hex(8)
    softhsm.init_token(conf, label, pin, secrets.token_hex(8))
    return pin


def run(quick: bool = False) -> None:
    n = int(os.environ.get("BENCH_SUBSCRIBER_KEYS") or (10_000 if quick else 100_000))
    with tempfile.TemporaryDirectory(prefix="tincay-bench-keys-") as tmp:
        home = Path(tmp)
        pin = fresh_token(home, "bench-keys")
        baseline = int(os.environ.get("BENCH_SUBSCRIBER_KEYS_BASELINE") or min(n // 10, 1000))
        _run(n, baseline, home, pin)


def bench_ca(home: Path, token: str, pin: str) -> tuple[Any, Any, Any]:
    """(service, key backend, engine): a root and an issuing CA ``ca``, both P-256 on the
    SoftHSM token ``token``, over a fresh SQLite database in ``home`` (bench/batch_issue.py
    measures on the same set-up)."""
    from ca.clock import SystemClock
    from ca.hierarchy import load_hierarchy
    from ca.keys.pkcs11 import Pkcs11Backend
    from ca.profiles import load_profiles
    from ca.services import CertificateAuthority
    from ca.settings import PinSource, find_softhsm_module
    from ca.store.db import create_engine_for, make_session_factory, migrate

    keys = Pkcs11Backend(find_softhsm_module(), token, PinSource({"TINCAY_PKCS11_PIN": pin}))
    engine = create_engine_for(f"sqlite:///{home / 'bench.db'}", create=True)
    migrate(engine)
    profiles = load_profiles(REPO / "profiles")
    service = CertificateAuthority(make_session_factory(engine), keys, profiles, SystemClock(),
                                   "http://127.0.0.1:8080")
    spec = load_hierarchy({
        "name": "bench",
        "authorities": [
            {"name": "root", "profile": "root-ca", "key": "ec-p256",
             "subject": "C=VN, O=Tincay, CN=Bench Root"},
            {"name": "ca", "parent": "root", "profile": "issuing-ca", "key": "ec-p256",
             "subject": "C=VN, O=Bệnh viện Quận 11, CN=Bench Issuing CA"}],
    }, profiles)
    service.authorities.init_hierarchy(spec)
    return service, keys, engine


def _run(n: int, baseline: int, home: Path, pin: str) -> None:
    from pkcs11 import Attribute

    from ca.keys.base import KeySpec
    from ca.services import KeySource
    from ca.subject import parse_subject

    service, keys, engine = bench_ca(home, "bench-keys", pin)

    def token_objects() -> int:
        return keys.session.run(lambda s: len(list(s.get_objects({Attribute.TOKEN: True}))),
                                reads_token=True)

    subject = parse_subject(SUBJECT)
    source = KeySource(generate=KeySpec.parse("ec-p256"))
    tenth = max(1, n // 10)
    rng = random.Random(20)
    service.subscriber_keys.generate(KeySpec.parse("ec-p256"), authority="ca")  # the KEK
    objects_before = token_objects()
    uris: list[str] = []
    marks: list[float] = []
    cpu: list[float] = []

    def mark() -> None:
        marks.append(time.perf_counter())
        cpu.append(time.process_time())

    few: tuple[float, float] | None = None
    mark()
    for i in range(n):
        issued = service.issuance.issue("ca", "clinician", subject, source, days=30)
        uris.append(issued.key_uri or "")
        if i + 1 == tenth or i + 1 == n - tenth:
            mark()
            if i + 1 == tenth:
                few = _latency(service, uris, rng)
                mark()
    mark()
    objects_after = token_objects()
    many = _latency(service, uris, rng)
    on_token = KeySource(generate=KeySpec.parse("ec-p256"), token_object=True)
    token_first, token_last, _ = _rates(service, baseline, on_token, subject) if baseline >= 10 \
        else (0.0, 0.0, [])
    first_rate = tenth / (marks[1] - marks[0])
    last_rate = tenth / (marks[-1] - marks[-2])
    # CPU time (SoftHSM runs in this process): what two shared cores do to wall time aside
    first_cpu, last_cpu = tenth / (cpu[1] - cpu[0]), tenth / (cpu[-1] - cpu[-2])
    total = (marks[-1] - marks[0]) - (marks[2] - marks[1])  # the first latency probe left out
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert few is not None
    print(f"subscriber keys: {n} issuances with wrapped HSM keys (ec-p256) in {total:.1f} s, "
          f"{n / total:.0f}/s")
    print(f"  rate, first 10%: {first_rate:.0f}/s; last 10%: {last_rate:.0f}/s; "
          f"last/first {last_rate / first_rate:.2f}")
    print(f"  per CPU second, first 10%: {first_cpu:.0f}/s; last 10%: {last_cpu:.0f}/s; "
          f"last/first {last_cpu / first_cpu:.2f}")
    print(f"  token objects: {objects_before} before, {objects_after} after")
    print(f"  peak RSS: {peak_mb:.0f} MB")
    print(f"  signer(uri) + sign, median over {SAMPLES} distinct random keys: "
          f"{tenth} keys: cold {few[0] * 1e3:.2f} ms, warm {few[1] * 1e3:.2f} ms; "
          f"{n} keys: cold {many[0] * 1e3:.2f} ms, warm {many[1] * 1e3:.2f} ms; "
          f"ratio cold {many[0] / few[0]:.2f}, warm {many[1] / few[1]:.2f}")
    if token_first:
        print(f"  baseline, a token object per key: {baseline} issuances: first 10% "
              f"{token_first:.0f}/s, last 10% {token_last:.0f}/s, last/first "
              f"{token_last / token_first:.2f}; wrapped (last 10%) / token (last 10%) "
              f"{last_rate / token_last:.2f}")
    service.close()
    keys.close()
    engine.dispose()
