"""The registration API under load (issue 21): certificates issued and persisted per second
through ``POST /api/v1/certificates`` by 8 concurrent clients, beside cryptography's
CertificateBuilder with an in-memory P-256 key in the same run.

``tincay serve`` (2 workers, SQLite, the issuing CA's P-256 key on SoftHSM) on loopback; an
``admin`` client's bearer token; wrk with 8 connections posts one P-256 CSR with a clinician's
subject again and again (each a new certificate: the CSR is parsed and its signature checked
every time). A certificate counts when it is in the database as issued, so an answer the
service did not persist never inflates the rate; any answer but 201 fails the bench. The
builder builds the certificate the API issued (its issuer, validity and extensions), signs it
with an in-memory key and persists nothing: the ceiling of issuance itself.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.batch_issue import SUBJECT, _csrs, builder_rate
from bench.csc_load import _token  # the platform's one client registry: any token serves
from bench.http_load import WORKERS, _cli, _rate, bench_instance, serving

CLIENTS = 8
ROUNDS = 3


def run(quick: bool = False) -> None:
    seconds = 3 if quick else 6
    with tempfile.TemporaryDirectory(prefix="tincay-bench-ra-") as tmp:
        home = Path(tmp) / "home"
        env, port = bench_instance(home, "ec-p256")
        added = json.loads(_cli(env, "client", "add", "bench-hr", "--role", "admin", "--json"))
        with serving(env, port) as base:
            token = _token(base, added["client_id"], added["client_secret"])
            script = _script(home, token)
            rows = []
            for round_ in range(ROUNDS):
                before = _issued(env)
                wrk = _wrk(base, script, seconds)
                persisted = (_issued(env) - before) / seconds
                builder = builder_rate(_template(env), 2000 if quick else 5000)
                rows.append((persisted, wrk, builder))
    _report(rows, seconds)


def _script(home: Path, token: str) -> Path:
    body = home / "issue.json"
    body.write_text(json.dumps({"ca": "issuing-ca", "profile": "clinician",
                                "subject": SUBJECT.format(n=1), "csr": _csrs()[0],
                                "days": 365}), encoding="utf-8")
    script = home / "issue.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
        f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*all")\nf:close()\n',
        encoding="utf-8")
    return script


def _wrk(base: str, script: Path, seconds: int) -> float:
    out = subprocess.run(["wrk", "-t2", f"-c{CLIENTS}", "-s", str(script), f"-d{seconds}s",
                          f"{base}/api/v1/certificates"], capture_output=True, text=True,
                         check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"the registration API refused requests under load:\n{out}")
    rate = _rate(out)
    if rate is None:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    return rate


def _issued(env: dict[str, str]) -> int:
    """Certificates issued under the clinician profile, read from the database."""
    from sqlalchemy import func, select

    from ca.store.models import Certificate
    from cli.context import AppContext

    app = AppContext(env)
    try:
        with app.service.context.read() as session:
            return int(session.scalar(select(func.count()).select_from(Certificate).where(
                Certificate.status == "issued", Certificate.profile == "clinician")) or 0)
    finally:
        app.close()


def _template(env: dict[str, str]) -> Any:
    from bench.batch_issue import _template as template
    from cli.context import AppContext

    app = AppContext(env)
    try:
        return template(app.service)
    finally:
        app.close()


def _report(rows: list[tuple[float, float, float]], seconds: int) -> None:
    print(f"registration API: POST /api/v1/certificates from CSRs, {CLIENTS} concurrent "
          f"clients (wrk), {WORKERS} workers, issuing CA P-256 on SoftHSM, SQLite; "
          f"{ROUNDS} runs of {seconds} s:")
    ratios = []
    for n, (persisted, answered, builder) in enumerate(rows, 1):
        ratios.append(persisted / builder)
        print(f"  run {n}: {persisted:6,.0f} certificates/s persisted ({answered:,.0f} "
              f"answers/s), builder {builder:7,.0f}/s: x{persisted / builder:.3f}")
    print(f"  REST / builder: x{statistics.median(ratios):.3f} "
          f"({min(ratios):.3f}-{max(ratios):.3f})")
