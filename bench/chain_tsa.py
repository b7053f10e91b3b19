"""What the hash chain costs the TSA (issue 22: at most 10%): ``tincay serve``, whose token
log appends to the chain (the chain's lock, a read of its last row and the batch's hashes in
each group commit's transaction: ca.store.chain_store), beside the same server's app logging the same
tokens with the same durable insert and no chain (bench/unchained_tsa.py), in one run.

Two figures per pair of runs (alternating which goes first):
- tokens/s under wrk, and their ratio;
- the servers' CPU time per token (arbiter and workers, from /proc), and the ratio of the
  unchained server's to the chained one's: what the chain costs a saturated server. On a VM
  shared with other work the tokens/s of runs seconds apart differ by up to 2x while the CPU
  a token takes hardly moves, so the CPU ratio is the steadier of the two.
SQLite by default (the TSA's embedded store); with TINCAY_BENCH_POSTGRES_URL set (a server
URL), PostgreSQL too, in a fresh database on that server.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bench.http_load import (CONNECTIONS, TINCAY, WORKERS, _cli, _free_port, _post_script,
                             _wait, bench_instance)

ROUNDS = 5
TARGET = 0.90  # chained tokens/s at least this share of unchained ones
_TICKS = os.sysconf("SC_CLK_TCK")


def run(quick: bool = False) -> None:
    if shutil.which("wrk") is None:
        print("chain_tsa: wrk is not installed (make bench installs it); skipped")
        return
    seconds = 3 if quick else 5
    backends: list[tuple[str, str | None]] = [("SQLite", None)]
    if os.environ.get("TINCAY_BENCH_POSTGRES_URL"):
        backends.append(("PostgreSQL", os.environ["TINCAY_BENCH_POSTGRES_URL"]))
    for n, (label, url) in enumerate(backends):
        with tempfile.TemporaryDirectory(prefix="tincay-bench-") as tmp:
            # in this process only once: SoftHSM reads its configuration (the first
            # instance's token directory) when first loaded
            _measure(Path(tmp) / "home", label, url, seconds, in_process=n == 0)


def _measure(home: Path, label: str, server_url: str | None, seconds: int, *,
             in_process: bool) -> None:
    env, port = bench_instance(home, "ec-p256",
                               _fresh_postgres(server_url) if server_url else None)
    data = home / "record.txt"
    data.write_bytes(b"bench")
    tsq = home / "q.tsq"
    subprocess.run(["openssl", "ts", "-query", "-data", str(data), "-sha256", "-cert", "-out",
                    str(tsq)], check=True, capture_output=True)
    script = _post_script(tsq, "application/timestamp-query")
    rates: dict[str, list[float]] = {"chained": [], "unchained": []}
    cpu: dict[str, list[float]] = {"chained": [], "unchained": []}
    chained_cmd = [TINCAY, "serve", "--port", str(port), "--workers", str(WORKERS),
                   "--no-maintenance"]
    bare_port = _free_port()
    bare_cmd = [sys.executable, "-c",
                "from cli.serve import serve; from bench.unchained_tsa import create_app; "
                f"serve('127.0.0.1', {bare_port}, {WORKERS}, 4, app_factory=create_app)"]
    with _server(chained_cmd, env, port) as chained, _server(bare_cmd, env, bare_port) as bare:
        servers = {"chained": chained, "unchained": bare}
        for round_ in range(ROUNDS):
            order = ("chained", "unchained") if round_ % 2 == 0 else ("unchained", "chained")
            for name in order:
                url, pid = servers[name]
                rate, requests, used = _wrk(url + "/tsa", seconds, script, pid)
                rates[name].append(rate)
                cpu[name].append(used / requests * 1e6)
    pairs = [a / b for a, b in zip(rates["chained"], rates["unchained"])]
    cpu_pairs = [b / a for a, b in zip(cpu["chained"], cpu["unchained"])]
    ratio, cpu_ratio = statistics.median(pairs), statistics.median(cpu_pairs)
    print(f"TSA tokens on {label}, P-256 on SoftHSM, {WORKERS} gevent workers, wrk "
          f"-c{CONNECTIONS}, {ROUNDS} paired runs of {seconds} s:")
    for name in ("chained", "unchained"):
        print(f"  {name + ' log':15} {statistics.median(rates[name]):7,.0f} tokens/s "
              f"({', '.join(f'{r:,.0f}' for r in rates[name])}); "
              f"{statistics.median(cpu[name]):5.0f} us server CPU a token "
              f"({', '.join(f'{c:.0f}' for c in cpu[name])})")
    print(f"  chained / unchained tokens/s: x{ratio:.3f} "
          f"(pairs {', '.join(f'{r:.2f}' for r in pairs)})")
    print(f"  unchained / chained CPU a token: x{cpu_ratio:.3f} "
          f"(pairs {', '.join(f'{r:.3f}' for r in cpu_pairs)}; target >= x{TARGET}: "
          f"{'met' if cpu_ratio >= TARGET else 'MISSED'})")
    if in_process:
        _in_process(env, tsq.read_bytes())
    _cli(env, "audit", "checkpoint")
    out = _cli(env, "audit", "verify")
    tsa = [line for line in out.splitlines() if line.startswith("tsa:")]
    print(f"  after the run, tincay audit verify: {tsa[0] if tsa else out.strip()}")


def _in_process(env: dict[str, str], query: bytes, blocks: int = 20, each: int = 50) -> None:
    """The same two apps called in this process, one request at a time (a batch of one: the
    chain's per-batch statements are not shared, the chain's worst case), alternating blocks
    of ``each`` requests: CPU time a token (process time: the fsync's wait is not counted)."""
    import time

    from werkzeug.test import Client

    from bench.unchained_tsa import unchained
    from cli.context import AppContext
    from web.app import create_app

    saved = dict(os.environ)
    os.environ.update(env)  # the SoftHSM module reads SOFTHSM2_CONF when first loaded
    try:
        service = AppContext(dict(env), migrate=False).service
        chained_app = create_app(service)
        bare_service = AppContext(dict(env), migrate=False).service
        bare_app = create_app(bare_service)
        unchained(bare_service)
        clients = {"chained": Client(chained_app), "unchained": Client(bare_app)}
        spent: dict[str, list[float]] = {"chained": [], "unchained": []}
        for block in range(blocks):
            for name in (("chained", "unchained") if block % 2 == 0
                         else ("unchained", "chained")):
                client = clients[name]
                started = time.process_time()
                for _ in range(each):
                    reply = client.post("/tsa", data=query,
                                        content_type="application/timestamp-query")
                    assert reply.status_code == 200
                spent[name].append((time.process_time() - started) / each * 1e6)
        service.close()
        bare_service.close()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    chained, bare = (statistics.median(spent[n]) for n in ("chained", "unchained"))
    print(f"  in one process, one request at a time ({blocks} alternating blocks of {each}): "
          f"{chained:.0f} us CPU a token chained, {bare:.0f} unchained: x{bare / chained:.3f} "
          f"(target >= x{TARGET}: {'met' if bare / chained >= TARGET else 'MISSED'})")


@contextmanager
def _server(command: list[str], env: dict[str, str], port: int) -> Iterator[tuple[str, int]]:
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(base)
        yield base, server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wrk(url: str, seconds: int, script: Path, pid: int) -> tuple[float, int, float]:
    """(requests/s, requests, CPU seconds the server's processes used) of one measured run,
    after a 1 s warm-up."""
    args = ["wrk", "-t2", f"-c{CONNECTIONS}", "-s", str(script)]
    subprocess.run([*args, "-d1s", url], capture_output=True, check=True)
    before = _tree_cpu(pid)
    out = subprocess.run([*args, f"-d{seconds}s", url], capture_output=True, text=True,
                         check=True).stdout
    used = _tree_cpu(pid) - before
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise RuntimeError(f"{url}: error responses under load\n{out}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    requests = re.search(r"(\d+) requests in", out)
    if rate is None or requests is None:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    return float(rate.group(1)), int(requests.group(1)), used


def _tree_cpu(root: int) -> float:
    """User + system CPU seconds of ``root`` and its descendants (live ones), from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / _TICKS
    total, wanted = 0.0, {root}
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in wanted and pid not in wanted:
                wanted.add(pid)
                changed = True
    for pid in wanted:
        total += times.get(pid, 0.0)
    return total


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
