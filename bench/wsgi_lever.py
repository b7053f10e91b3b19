"""The WSGI-server lever of issue 23: tincay's own app (cli.serve.worker_app, the app every
``tincay serve`` worker runs) under granian, a Rust HTTP server for WSGI, beside ``tincay
serve``'s gunicorn + gevent in bench/peers.py's pairs.

Only a measurement: granian serves the app with none of ``tincay serve``'s own promises around
it (cli/http_limits.py's header and body bounds, the TLS and client-certificate set-up, the
maintenance process, the metrics directory shared by the workers). Its workers are processes
(each with its own PKCS#11 session, as DESIGN.md section 5 wants) and its app runs on
``BLOCKING_THREADS`` OS threads a worker: no gevent, so the token log's group commit gathers
what concurrent threads queue, as under gunicorn's gthread workers.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

from bench.http_load import _free_port, _wait

WORKERS = 2  # as tincay serve in the bench (bench/http_load.py WORKERS)
BLOCKING_THREADS = 8
REPO = Path(__file__).resolve().parent.parent


def granian_server(stack: ExitStack, env: dict[str, str], log: Path) -> str | None:
    """tincay's app under granian on a free port, stopped with ``stack``: its base URL, or
    None (the reason printed) when granian is not installed."""
    granian = shutil.which("granian") or str(Path(sys.executable).with_name("granian"))
    if not Path(granian).exists():
        print("peers: the granian lever is skipped: granian is not installed "
              "(pip install -e '.[bench]')")
        return None
    port = _free_port()
    output = log.open("wb")
    stack.callback(output.close)
    server = subprocess.Popen(
        [granian, "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(WORKERS), "--blocking-threads", str(BLOCKING_THREADS), "--no-ws",
         "--factory", "cli.serve:worker_app"],
        env=env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)

    def stop() -> None:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    stack.callback(stop)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(base)
    except OSError:
        raise RuntimeError(f"peers: granian did not start: {log.read_text()[-2000:]}") from None
    return base
