"""What the hash chain costs the TSA (issue 22: at most 10%): tokens/s of ``tincay serve``,
whose token log appends to the chain (one lock-and-read of the head, the batch's hashes and
one head update in each group commit's transaction), beside the same server's app logging the
same tokens with the same durable insert and no chain (bench/unchained_tsa.py), in one run.

Runs alternate (chained first in every other pair) and the ratio is the median of the paired
ratios: this VM's speed drifts by up to 2x within minutes, runs side by side move together.
SQLite by default (the TSA's embedded store); with TINCAY_BENCH_POSTGRES_URL set, PostgreSQL
too (a fresh database on that server).
"""
from __future__ import annotations

import os
import secrets
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench.http_load import _reference_server, _wrk, bench_instance, serving

ROUNDS = 5
TARGET = 0.90  # chained tokens/s at least this share of unchained ones


def run(quick: bool = False) -> None:
    if shutil.which("wrk") is None:
        print("chain_tsa: wrk is not installed (make bench installs it); skipped")
        return
    seconds = 3 if quick else 5
    backends = [("SQLite", None)]
    if os.environ.get("TINCAY_BENCH_POSTGRES_URL"):
        backends.append(("PostgreSQL", os.environ["TINCAY_BENCH_POSTGRES_URL"]))
    for label, url in backends:
        with tempfile.TemporaryDirectory(prefix="tincay-bench-") as tmp:
            _measure(Path(tmp) / "home", label, url, seconds)


def _measure(home: Path, label: str, server_url: str | None, seconds: int) -> None:
    env, port = bench_instance(home, "ec-p256",
                               _fresh_postgres(server_url) if server_url else None)
    data = home / "record.txt"
    data.write_bytes(b"bench")
    tsq = home / "q.tsq"
    subprocess.run(["openssl", "ts", "-query", "-data", str(data), "-sha256", "-cert", "-out",
                    str(tsq)], check=True, capture_output=True)
    kind = "application/timestamp-query"
    chained, unchained, ratios = [], [], []
    with serving(env, port) as base, _reference_server("bench.unchained_tsa", env) as bare:
        for round_ in range(ROUNDS):
            if round_ % 2 == 0:
                a = _wrk(base + "/tsa", seconds, tsq, kind)
                b = _wrk(bare + "/tsa", seconds, tsq, kind)
            else:
                b = _wrk(bare + "/tsa", seconds, tsq, kind)
                a = _wrk(base + "/tsa", seconds, tsq, kind)
            chained.append(a)
            unchained.append(b)
            ratios.append(a / b)
    ratio = statistics.median(ratios)
    print(f"TSA tokens/s on {label}, P-256 on SoftHSM, 2 gevent workers, wrk -c32, "
          f"{ROUNDS} paired runs of {seconds} s:")
    print(f"  chained log    {statistics.median(chained):8,.0f} tokens/s "
          f"({', '.join(f'{r:,.0f}' for r in chained)})")
    print(f"  unchained log  {statistics.median(unchained):8,.0f} tokens/s "
          f"({', '.join(f'{r:,.0f}' for r in unchained)})")
    print(f"  chained / unchained: x{ratio:.3f} (pairs {', '.join(f'{r:.3f}' for r in ratios)}; "
          f"target >= x{TARGET}: {'met' if ratio >= TARGET else 'MISSED'})")
    _check_chain(env)


def _check_chain(env: dict[str, str]) -> None:
    from bench.http_load import _cli

    _cli(env, "audit", "checkpoint")
    out = _cli(env, "audit", "verify")
    tsa = [line for line in out.splitlines() if line.startswith("tsa:")]
    print(f"  after the run: {tsa[0] if tsa else out.strip()}")


def _fresh_postgres(server_url: str) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(server_url)
    name = f"tincay_bench_{secrets.token_hex(4)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)
