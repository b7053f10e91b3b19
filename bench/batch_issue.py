"""Bulk issuance (issue 21): certificates issued and persisted per second by ``tincay issue
--batch`` (ca.services.batch, the service the command runs; the OCSP refresh the command does
at the end is not counted), beside cryptography's CertificateBuilder with an in-memory P-256
key in the same run.

In one process on a fresh SoftHSM token and SQLite database (synchronous=FULL), issuing CA
P-256 on the token:

- rows with CSRs (P-256, inline PEM in a JSON lines file; each parsed and its signature
  verified), and rows with ``key_type`` (the key generated on the HSM and wrapped under its
  KEK, ca.services.subscriber_keys), each against the builder: the same subject, validity and
  key usage, signed with an in-memory key, nothing persisted;
- 200 CSR issuances one at a time through ``Issuance.issue`` (what one ``tincay issue``
  does, without the process start), for the batch's gain;
- a long run of N CSR rows: the rate of the first and the last 10% (flat means about 1.0) and
  the process's peak RSS.

Sizes: 2,000 CSR rows, 500 key rows, N = 100,000 (``--quick``: 1,000, 200, 5,000);
``BENCH_BATCH_N`` sets N.
"""
from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SUBJECT = "C=VN, O=Bệnh viện Quận 11, CN=Bác sĩ {n}, UID=CCCD:0790730{n:05d}"
CSR_POOL = 200  # distinct requests, cycled: parsing and verifying each costs the same


def _csrs() -> list[str]:
    out = []
    for n in range(CSR_POOL):
        key = ec.generate_private_key(ec.SECP256R1())
        out.append(x509.CertificateSigningRequestBuilder().subject_name(x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, f"r{n}")])).sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM).decode("ascii"))
    return out


def _write_rows(path: Path, n: int, csrs: list[str] | None, start: int = 0) -> Path:
    """A JSON lines batch of ``n`` rows, written a row at a time (100,000 rows are not held
    in this process's memory: its peak RSS is the batch's)."""
    with path.open("w", encoding="utf-8") as handle:
        for i in range(start, start + n):
            row: dict[str, Any] = {"profile": "clinician",
                                   "subject": SUBJECT.format(n=i % 100000), "days": 365}
            if csrs is None:
                row["key_type"] = "ec-p256"
            else:
                row["csr"] = csrs[i % len(csrs)]
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _rss_mb() -> float:
    """The process's resident set now (Linux), in MB."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def builder_rate(template: x509.Certificate, n: int) -> float:
    """Certificates/s of cryptography's builder with an in-memory P-256 key, building the
    certificate the batch builds (``template``, one it issued: its issuer, extensions and
    validity; a fresh serial and common name each), nothing checked or persisted."""
    issuer_key = ec.generate_private_key(ec.SECP256R1())
    subscriber = template.public_key()
    attributes = [a for a in template.subject if a.oid != NameOID.COMMON_NAME]
    t0 = time.perf_counter()
    for i in range(n):
        subject = x509.Name(attributes + [x509.NameAttribute(NameOID.COMMON_NAME, f"Bác sĩ {i}")])
        builder = (x509.CertificateBuilder().subject_name(subject)
                   .issuer_name(template.issuer).public_key(subscriber)  # type: ignore[arg-type]
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(template.not_valid_before_utc)
                   .not_valid_after(template.not_valid_after_utc))
        for extension in template.extensions:
            builder = builder.add_extension(extension.value, extension.critical)
        builder.sign(issuer_key, hashes.SHA256())
    return n / (time.perf_counter() - t0)


def single_rate(service: Any, csrs: list[str], n: int) -> tuple[float, float]:
    """Certificates/s (wall, CPU) of ``n`` issuances one at a time through the Python API
    (ca.services.issuance: two commits each, the CA key looked up each time)."""
    from ca import issuance
    from ca.services import KeySource
    from ca.subject import parse_subject

    sources = [KeySource(csr=issuance.load_csr(pem.encode())) for pem in csrs[:n]]
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        service.issuance.issue("ca", "clinician", parse_subject(SUBJECT.format(n=90000 + i)),
                               sources[i % len(sources)], days=365)
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def _template(service: Any) -> x509.Certificate:
    """A certificate the batch issued, for :func:`builder_rate` to build alike."""
    from ca.store.models import Certificate

    with service.context.read() as session:
        der = session.query(Certificate.der).filter(Certificate.status == "issued",
                                                    Certificate.profile == "clinician").first()
    return x509.load_der_x509_certificate(der[0])


Mark = tuple[int, float, float, float]  # rows done, perf_counter, process_time, RSS MB


def _timed(service: Any, path: Path) -> tuple[float, float, list[Mark]]:
    """(rows/s, rows per CPU second, a mark after each chunk) of one batch run: the rows of
    ``path`` through the service ``tincay issue --batch`` runs, chunk by chunk. CPU time
    (SoftHSM runs in this process) is what the other processes of a shared machine disturb
    less than wall time."""
    from ca.services.batch_files import read_rows

    done = 0
    marks = [(0, time.perf_counter(), time.process_time(), _rss_mb())]
    for chunk in service.batch.rows.issue_rows("ca", read_rows(path, "jsonl"), path.parent):
        assert all(r.status == "issued" for r in chunk), chunk
        done += len(chunk)
        marks.append((done, time.perf_counter(), time.process_time(), _rss_mb()))
    return (done / (marks[-1][1] - marks[0][1]), done / (marks[-1][2] - marks[0][2]), marks)


def _tenths(marks: list[Mark], clock: int) -> tuple[float, float]:
    """The rates over the first and the last 10% of the rows (to the nearest chunk), by wall
    (``clock`` 1) or CPU time (2)."""
    n = marks[-1][0]
    first = next(m for m in marks if m[0] >= n / 10)
    last = next(m for m in reversed(marks) if m[0] <= n - n / 10)
    return (first[0] / (first[clock] - marks[0][clock]),
            (n - last[0]) / (marks[-1][clock] - last[clock]))


def _cpu_builder(template: x509.Certificate, n: int) -> tuple[float, float]:
    """:func:`builder_rate` by wall and by CPU time."""
    cpu = time.process_time()
    wall = builder_rate(template, n)
    return wall, n / (time.process_time() - cpu)


def run(quick: bool = False) -> None:
    from bench.subscriber_keys import fresh_token

    with tempfile.TemporaryDirectory(prefix="tincay-bench-batch-") as tmp:
        home = Path(tmp)
        pin = fresh_token(home, "bench-batch")
        sizes = (1_000, 200, 5_000) if quick else (2_000, 500, 100_000)
        n = int(os.environ.get("BENCH_BATCH_N") or sizes[2])
        _run(home, pin, sizes[0], sizes[1], n)


def _run(home: Path, pin: str, csr_rows: int, key_rows: int, n: int) -> None:
    from bench.subscriber_keys import bench_ca

    service, keys, engine = bench_ca(home, "bench-batch", pin)
    csrs = _csrs()
    _timed(service, _write_rows(home / "warm.jsonl", 50, csrs, start=-50))  # lint keys, caches
    template = _template(service)
    before = _cpu_builder(template, max(csr_rows, 1000))
    csr = _timed(service, _write_rows(home / "csr.jsonl", csr_rows, csrs))
    keyed = _timed(service, _write_rows(home / "keys.jsonl", key_rows, None, start=csr_rows))
    single = single_rate(service, csrs, 200)
    after = _cpu_builder(template, max(csr_rows, 1000))
    wall, cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
    print(f"batch issuance: issue --batch, P-256 issuing CA on SoftHSM, SQLite "
          f"(synchronous=FULL); cryptography's builder with an in-memory P-256 key, the same "
          f"certificate: {wall:.0f}/s ({before[0]:.0f} before, {after[0]:.0f} after), "
          f"{cpu:.0f} per CPU second")
    for label, (rate, per_cpu, _) in ((f"{csr_rows} CSR rows", csr),
                                      (f"{key_rows} HSM-generated wrapped-key rows", keyed)):
        print(f"  {label}: {rate:.0f}/s, x{rate / wall:.2f} the builder; {per_cpu:.0f} per "
              f"CPU second, x{per_cpu / cpu:.2f} (target for CSRs x0.3)")
    print(f"  one issue() at a time with CSRs (200): {single[0]:.0f}/s, x{single[0] / wall:.2f}; "
          f"{single[1]:.0f} per CPU second; the batch's CSR rows x{csr[0] / single[0]:.1f}")
    path = _write_rows(home / "long.jsonl", n, csrs, start=csr_rows + key_rows)
    rate, per_cpu, marks = _timed(service, path)
    first, last = _tenths(marks, 1)
    first_cpu, last_cpu = _tenths(marks, 2)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tenth_rss = next(m for m in marks if m[0] >= n / 10)[3]
    print(f"  {n} CSR rows in one batch: {rate:.0f}/s ({per_cpu:.0f} per CPU second); first "
          f"10% {first:.0f}/s, last 10% {last:.0f}/s, last/first {last / first:.2f}; per CPU "
          f"second {first_cpu:.0f} and {last_cpu:.0f}, {last_cpu / first_cpu:.2f}; RSS "
          f"{marks[0][3]:.0f} MB before, {tenth_rss:.0f} MB after 10%, {marks[-1][3]:.0f} MB "
          f"at the end; peak {peak_mb:.0f} MB")
    service.close()
    keys.close()
    engine.dispose()
