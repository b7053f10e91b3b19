"""CRL publication from the database: seconds and peak RSS for 100,000 and 1,000,000 revoked
entries, beside cryptography's CertificateRevocationListBuilder on 100,000 in-memory entries.

Each measurement runs in a fresh child process so peak RSS (ru_maxrss) is its own. Targets from
issue 3: 1,000,000 entries in under 10 s and under 300 MB peak RSS.
"""
from __future__ import annotations

import datetime as dt
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from ca.testing import Hierarchy

SPEC = {"authorities": [
    {"name": "root", "profile": "root-ca", "key": "ec-p256", "subject": "C=VN, O=Bench, CN=Root"},
    {"name": "ca", "parent": "root", "profile": "issuing-ca", "key": "ec-p256",
     "subject": "C=VN, O=Bench, CN=CA"}]}


def _measure(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> None:
    sizes = (10_000, 100_000) if quick else (100_000, 1_000_000)
    baseline_n = sizes[0]
    baseline = _measure(f"""
import datetime as dt, json, resource, time
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
key = ec.generate_private_key(ec.SECP256R1())
now = dt.datetime(2026, 11, 24, tzinfo=dt.timezone.utc)
start = time.perf_counter()
builder = (x509.CertificateRevocationListBuilder()
           .issuer_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "CA")]))
           .last_update(now).next_update(now + dt.timedelta(days=7)))
for i in range({baseline_n}):
    builder = builder.add_revoked_certificate(x509.RevokedCertificateBuilder()
        .serial_number(2 ** 100 + i).revocation_date(now - dt.timedelta(seconds=i % 86400)).build())
builder.sign(key, hashes.SHA256())
print(json.dumps({{"seconds": time.perf_counter() - start,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
""")
    print(f"baseline: cryptography CertificateRevocationListBuilder, {baseline_n:,} entries: "
          f"{baseline['seconds']:.2f} s, peak RSS {baseline['rss_mb']:.0f} MB")
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{os.path.join(tmp, 'bench.db')}"
            result = _measure(f"""
import json
from bench.crl_build import fill_and_publish
print(json.dumps(fill_and_publish({url!r}, {n})))
""")
        per_entry_ratio = (result["seconds"] / n) / (baseline["seconds"] / baseline_n)
        print(f"tincay publish_crl from SQLite, {n:,} entries: {result['seconds']:.2f} s "
              f"(fill {result['fill_seconds']:.1f} s not counted), peak RSS during publication "
              f"{result['rss_mb']:.0f} MB, CRL {result['crl_mb']:.1f} MB; time per entry "
              f"x{per_entry_ratio:.2f} the baseline's; target for 1,000,000: < 10 s and "
              f"< 300 MB")


def fill_and_publish(url: str, count: int) -> dict:
    """In one process (the CA key lives in memory): fill, then time publish_crl alone."""
    from sqlalchemy import insert

    from ca.store.models import Authority, Certificate

    start = time.perf_counter()
    with Hierarchy.from_spec(SPEC, database_url=url) as pki:
        now = pki.clock.now()
        with pki.service.context.read() as session, session.begin():
            issuer_id = session.query(Authority.id).filter(Authority.name == "ca").scalar()
            batch = []
            for i in range(count):
                batch.append({"issuer_id": issuer_id, "serial_hex": format(2 ** 100 + i, "x"),
                              "status": "revoked", "profile": "citizen", "subject": "CN=x",
                              "not_before": now, "not_after": now + dt.timedelta(days=365),
                              "tbs_der": b"", "created_at": now,
                              "revoked_at": now - dt.timedelta(seconds=i % 86400),
                              "revocation_reason": ("keyCompromise", "superseded", None)[i % 3]})
                if len(batch) == 50_000:
                    session.execute(insert(Certificate), batch)
                    batch = []
            if batch:
                session.execute(insert(Certificate), batch)
        filled = time.perf_counter() - start
        gc.collect()
        _reset_peak_rss()
        start = time.perf_counter()
        info = pki.service.publication.publish_crl("ca")
        seconds = time.perf_counter() - start
        assert info.entries == count
        return {"seconds": seconds, "fill_seconds": filled, "rss_mb": _peak_rss_mb(),
                "crl_mb": len(info.der) / 2 ** 20}


def _reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM, so the peak is publication's alone (with
    whatever the fill left resident, which only makes the figure more conservative)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
