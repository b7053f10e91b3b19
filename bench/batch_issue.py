"""Bulk issuance (issue 21): certificates issued and persisted per second by ``tincay issue
--batch`` (ca.services.batch, the service the command runs; the OCSP refresh the command does
at the end is not counted), beside cryptography's CertificateBuilder with an in-memory P-256
key in the same run.

In one process on a fresh SoftHSM token and SQLite database (synchronous=FULL), issuing CA
P-256 on the token:

- rows with CSRs (P-256, inline PEM in a JSON lines file; each parsed and its signature
  verified), and rows with ``key_type`` (the key generated on the HSM and wrapped under its
  KEK, ca.services.subscriber_keys), each against two baselines, both one thread on one core,
  both signing with an in-memory P-256 key and persisting nothing:

  - **minimal** (:func:`builder_rate`): the builder alone. The subscriber's public key is one
    object taken from a certificate the batch issued (no CSR parsed, none verified), the
    extensions are that certificate's extension objects re-added as they are (none built),
    a fresh serial and common name each; ``sign()`` and nothing else (no DER asked for).
  - **matched** (:func:`matched_rate`): the same certificate as a CA must make it. Each
    certificate's CSR is parsed from its PEM and its signature verified, its public key
    taken from it; the subject built from the row's attributes; the extensions the
    clinician profile puts in built with cryptography's types (the ones that are the same
    for every certificate of the profile and issuer, keyUsage, authorityKeyIdentifier,
    certificatePolicies, cRLDistributionPoints, authorityInfoAccess, once; the
    subjectKeyIdentifier from each CSR's key); signed; its DER taken. Checked before timing:
    its extensions equal those of a certificate the batch issued. Not included (tincay's own
    work beyond the certificate): the row's checks against the profile, the claims, the
    pending row and its audit events, the HSM and the verification of its signature.

  From a batch's row 2,000 on, the batch checks and prepares CSR rows (the CSR's parse and
  signature, the subject, the TBS) in worker processes (``TINCAY_BATCH_WORKERS``,
  ca.services.batch_workers), so the 1,000-row run is one process and the N-row run uses
  them: the bench prints how many, and the rows per CPU second of all processes and of the
  main one; the baselines stay one process.
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
from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID, NameOID

SUBJECT = "C=VN, O=Bệnh viện Quận 11, CN=Bác sĩ {n}, UID=CCCD:0790730{n:05d}"
PUBLIC_URL = "http://127.0.0.1:8080"  # bench.subscriber_keys.bench_ca
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


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(service: Any, path: Path) -> tuple[float, float, list[Mark], float]:
    """(rows/s, rows per CPU second of the main process, a mark after each chunk, rows per
    CPU second of every process: the main one and its workers) of one batch run: the rows of
    ``path`` through the service ``tincay issue --batch`` runs, chunk by chunk. CPU time
    (SoftHSM runs in the main process) is what the other processes of a shared machine
    disturb less than wall time."""
    from ca.services.batch_files import read_rows

    done = 0
    marks = [(0, time.perf_counter(), time.process_time(), _rss_mb())]
    children = _children_cpu()
    for chunk in service.batch.rows.issue_rows("ca", read_rows(path, "jsonl"), path.parent):
        assert all(r.status == "issued" for r in chunk), chunk
        done += len(chunk)
        marks.append((done, time.perf_counter(), time.process_time(), _rss_mb()))
    cpu = marks[-1][2] - marks[0][2]
    workers = _children_cpu() - children  # the workers are reaped when the batch ends
    return (done / (marks[-1][1] - marks[0][1]), done / cpu, marks, done / (cpu + workers))


def _tenths(marks: list[Mark], clock: int) -> tuple[float, float]:
    """The rates over the first and the last 10% of the rows (to the nearest chunk), by wall
    (``clock`` 1) or CPU time (2)."""
    n = marks[-1][0]
    first = next(m for m in marks if m[0] >= n / 10)
    last = next(m for m in reversed(marks) if m[0] <= n - n / 10)
    return (first[0] / (first[clock] - marks[0][clock]),
            (n - last[0]) / (marks[-1][clock] - last[clock]))


def _clinician_extensions(template: x509.Certificate
                          ) -> list[tuple[x509.ExtensionType, bool]]:
    """The extensions of the clinician profile (profiles/person-base.yaml, clinician.yaml)
    that are the same for every certificate of one issuer, built with cryptography's types
    as a CA without tincay would write them; :func:`matched_rate` checks them against
    ``template`` (one the batch issued) before it times anything."""
    aia = x509.AuthorityInformationAccess([
        x509.AccessDescription(AuthorityInformationAccessOID.OCSP,
                               x509.UniformResourceIdentifier(f"{PUBLIC_URL}/ocsp")),
        x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS,
                               x509.UniformResourceIdentifier(f"{PUBLIC_URL}/certs/ca.cer"))])
    issuer_ski = template.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    return [
        (x509.KeyUsage(digital_signature=False, content_commitment=True, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=False,
                       crl_sign=False, encipher_only=False, decipher_only=False), True),
        (x509.AuthorityKeyIdentifier(issuer_ski.value.key_identifier, None, None), False),
        (x509.CertificatePolicies([x509.PolicyInformation(
            x509.ObjectIdentifier("1.3.6.1.4.1.59999.1.2.1"),
            ["https://pki.tincay.example.vn/cps"])]), False),
        (x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(f"{PUBLIC_URL}/crl/ca.crl")], None, None, None)]),
         False),
        (aia, False),
    ]


def matched_rate(template: x509.Certificate, csrs: list[str], n: int) -> float:
    """Certificates/s of cryptography's builder with an in-memory P-256 key making the
    certificate the batch makes, with the work any CA must do for it: each CSR parsed from
    PEM and its signature verified, its key taken from it, the subject built, the profile's
    extensions (the constant ones built once, the subjectKeyIdentifier per key), signed, the
    DER taken. Nothing persisted, no profile checks, no HSM."""
    issuer_key = ec.generate_private_key(ec.SECP256R1())
    constant = _clinician_extensions(template)
    got = {e.oid: (e.value, e.critical) for e in template.extensions
           if e.oid != ExtensionOID.SUBJECT_KEY_IDENTIFIER}
    assert got == {v.oid: (v, c) for v, c in constant}, "the baseline's extensions drifted"
    attributes = [a for a in template.subject if a.oid != NameOID.COMMON_NAME]
    pems = [pem.encode("ascii") for pem in csrs]
    issuer, sha256 = template.issuer, hashes.SHA256()
    not_before, not_after = template.not_valid_before_utc, template.not_valid_after_utc
    t0 = time.perf_counter()
    for i in range(n):
        csr = x509.load_pem_x509_csr(pems[i % len(pems)])
        if not csr.is_signature_valid:
            raise AssertionError("a bench CSR does not verify")
        key = csr.public_key()
        subject = x509.Name(attributes + [x509.NameAttribute(NameOID.COMMON_NAME, f"Bác sĩ {i}")])
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(key).serial_number(x509.random_serial_number())  # type: ignore[arg-type]
                   .not_valid_before(not_before).not_valid_after(not_after)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key),  # type: ignore[arg-type]
                                  False))
        for value, critical in constant:
            builder = builder.add_extension(value, critical)
        builder.sign(issuer_key, sha256).public_bytes(serialization.Encoding.DER)
    return n / (time.perf_counter() - t0)


Rates = tuple[float, float]  # per wall second, per CPU second


def _cpu(rate: Callable[[], float], n: int) -> Rates:
    """``rate()`` (certificates per wall second) and the same per CPU second."""
    cpu = time.process_time()
    wall = rate()
    return wall, n / (time.process_time() - cpu)


def _baselines(template: x509.Certificate, csrs: list[str], n: int) -> tuple[Rates, Rates]:
    """(minimal, matched), each by wall and by CPU time."""
    return (_cpu(lambda: builder_rate(template, n), n),
            _cpu(lambda: matched_rate(template, csrs, n), n))


def _workers(service: Any) -> str:
    """What the batch's rows run in, for the heading."""
    workers = getattr(service.batch.rows, "workers", 0)  # 0 before the workers existed
    return (f"CSR rows checked and prepared in {workers} worker process"
            f"{'es' if workers > 1 else ''} beside the main one from row "
            f"{getattr(service.batch.rows, 'workers_after', 0)} on (TINCAY_BATCH_WORKERS; "
            f"{os.cpu_count()} cores)" if workers else "one process (TINCAY_BATCH_WORKERS=0)")


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
    size = max(csr_rows, 1000)
    before = _baselines(template, csrs, size)
    csr = _timed(service, _write_rows(home / "csr.jsonl", csr_rows, csrs))
    keyed = _timed(service, _write_rows(home / "keys.jsonl", key_rows, None, start=csr_rows))
    single = single_rate(service, csrs, 200)
    after = _baselines(template, csrs, size)
    print(f"batch issuance: issue --batch, P-256 issuing CA on SoftHSM, SQLite "
          f"(synchronous=FULL), {_workers(service)}; baselines: cryptography's builder, "
          "one process, an in-memory P-256 key, the same certificate, nothing persisted")
    names = ("minimal (key and extension objects reused, no CSR)",
             "matched (CSR parsed and verified, extensions built, DER)")
    baselines = []
    for k, name in enumerate(names):
        wall, cpu = (before[k][0] + after[k][0]) / 2, (before[k][1] + after[k][1]) / 2
        baselines.append((wall, cpu))
        print(f"  baseline {name}: {wall:.0f}/s ({before[k][0]:.0f} before, "
              f"{after[k][0]:.0f} after), {cpu:.0f} per CPU second")
    (minimal, minimal_cpu), (matched, matched_cpu) = baselines
    for label, (rate, per_cpu, _, all_cpu) in (
            (f"{csr_rows} CSR rows", csr), (f"{key_rows} HSM-generated wrapped-key rows", keyed)):
        print(f"  {label}: {rate:.0f}/s, x{rate / matched:.2f} the matched builder "
              f"(target for CSRs x0.3), x{rate / minimal:.2f} the minimal; per CPU second "
              f"{all_cpu:.0f} over all processes (x{all_cpu / matched_cpu:.2f} matched), "
              f"{per_cpu:.0f} of the main process")
    print(f"  one issue() at a time with CSRs (200): {single[0]:.0f}/s, x{single[0] / matched:.2f} "
          f"matched; {single[1]:.0f} per CPU second; the batch's CSR rows x{csr[0] / single[0]:.1f}")
    path = _write_rows(home / "long.jsonl", n, csrs, start=csr_rows + key_rows)
    rate, per_cpu, marks, all_cpu = _timed(service, path)
    first, last = _tenths(marks, 1)
    first_cpu, last_cpu = _tenths(marks, 2)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tenth_rss = next(m for m in marks if m[0] >= n / 10)[3]
    print(f"  {n} CSR rows in one batch: {rate:.0f}/s ({all_cpu:.0f} per CPU second of all "
          f"processes, {per_cpu:.0f} of the main one); first "
          f"10% {first:.0f}/s, last 10% {last:.0f}/s, last/first {last / first:.2f}; per CPU "
          f"second of the main process {first_cpu:.0f} and {last_cpu:.0f}, "
          f"{last_cpu / first_cpu:.2f}; RSS of the main process "
          f"{marks[0][3]:.0f} MB before, {tenth_rss:.0f} MB after 10%, {marks[-1][3]:.0f} MB "
          f"at the end; peak {peak_mb:.0f} MB")
    service.close()
    keys.close()
    engine.dispose()
