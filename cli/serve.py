"""Run the app under gunicorn: the production server, also what ``make run`` starts.

Each worker is a process with its own PKCS#11 session, which is how HSM signing scales. Within
a worker, requests run as greenlets under gevent's WSGI server (gunicorn's ``gevent_pywsgi``
worker). Measured on 2 cores with wrk, two servers side by side and alternated (median of 4
pairs), against gthread workers (2 x 4 threads, which beat sync workers by about 20%, DESIGN.md
5): 1.34x on the constant-body ceiling, 1.30x on pre-produced OCSP, 1.39x on nonce OCSP and
1.44x on time-stamps. gunicorn's own ``gevent`` worker, with gunicorn's HTTP parser, was
slower: pywsgi beat it by 1.17-1.34x on each. Time-stamps gain most because concurrent tokens
then share a commit with no thread hand-offs (ca/store/group_commit.py). (Since then the group
commit also gathers under threads: gthread's time-stamps rose from 1,052 to 1,599-1,796
tokens/s, 2026-12-03, where gevent served about 4,000 on the same machine.)
Nothing in a request blocks for long: an HSM signature takes microseconds to a millisecond and
psycopg2 waits for PostgreSQL cooperatively (ca/store/db.py). ``worker_class="gthread"`` is
there for a database or HSM that answers slowly.

Each worker listens on its own SO_REUSEPORT socket (gunicorn's reuse_port), so the kernel
spreads new connections across the workers. On one shared socket the workers race to accept,
and a burst of keep-alive connections opened at once (a validator's connection pool, wrk) could
land mostly on one worker and stay there: under wrk one run in three left a worker nearly idle
and halved the throughput (nonce OCSP 1,480 instead of 2,990 req/s). The price: connections
queued on a worker's socket when that worker exits (a reload, a crash) are reset unless the
kernel migrates them, so production hosts set ``net.ipv4.tcp_migrate_req=1`` (Linux 5.14+).
SO_REUSEPORT would also let a second server join a port in use, so :func:`serve` first checks
that the port is free.

Slow clients and ambiguous framings are bounded and refused by cli/http_limits.py (the limits,
TINCAY_HTTP_*), cli/pywsgi_worker.py (gevent's handler under them) and cli/gthread_worker.py
(gthread's main loop gathers each request before a thread serves it).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from datetime import timedelta
from typing import Any, Callable, Sequence

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from ca.errors import ConfigurationError
from cli.http_limits import HttpLimits, raise_open_files
from cli.logs import configure, configured, formatter
from cli.params import WORKER_CLASSES, WORKERS


class _Log(Logger):
    """gunicorn's log in tincay's format (cli/logs.py: JSON lines unless TINCAY_LOG_FORMAT
    says text), saying where it listens: with SO_REUSEPORT the arbiter holds no socket (each
    worker binds its own), and gunicorn's "Listening at:" line came out empty."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        settings = configured() or configure()
        for handler in self.error_log.handlers:
            handler.setFormatter(formatter(settings))

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        if msg.startswith("Listening at:") and args and not args[0]:
            scheme = "https" if self.cfg.is_ssl else "http"
            where = ",".join(f"{scheme}://{host}:{port}" for host, port in self.cfg.address)
            args = (f"{where} (a SO_REUSEPORT socket in each worker)", *args[1:])
        super().info(msg, *args, **kwargs)


class TincayServer(BaseApplication):
    """gunicorn configured from arguments instead of a config file or argv."""

    def __init__(self, options: dict[str, Any],
                 app_factory: Callable[[], Any] | None = None,
                 limits: HttpLimits | None = None) -> None:
        self.options = options
        self.app_factory = app_factory
        self.limits = limits or HttpLimits()  # read by cli.pywsgi_worker in each worker
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        if self.app_factory is not None:  # bench/: the same stack around another app
            return self.app_factory()
        return worker_app()


def serve(host: str, port: int, workers: int | None = None, threads: int = 4,
          maintenance: timedelta | None = None, worker_class: str = WORKER_CLASSES[0],
          app_factory: Callable[[], Any] | None = None,
          limits: HttpLimits | None = None, certfile: str | None = None,
          keyfile: str | None = None, client_ca: str | None = None,
          maintenance_args: Sequence[str] = (), tsa_mark_file: str | None = None) -> None:
    """Serve until interrupted; workers default to the CPU count, ``threads`` counts for
    gthread workers only. With ``certfile`` and ``keyfile`` (PEM), HTTPS only: both worker
    classes serve TLS (cli/pywsgi_worker.py, cli/gthread_worker.py say how). With
    ``client_ca`` (a PEM bundle) too, TLS clients are asked for a certificate, verified against
    the bundle in the handshake (CERT_OPTIONAL: a client may send none), and the verified one
    reaches the app (web/client_cert.py).

    With ``maintenance``, the arbiter also starts ``tincay maintain --interval`` once the
    workers are ready and stops it on exit: one process, one HSM session, no duplicate
    publishing from several workers. ``maintenance_args`` go to it too (--tls-self's renewal,
    with ``--reload-pid`` the arbiter's, which a SIGHUP makes replace its workers).

    ``tsa_mark_file``: the workers' TINCAY_TSA_MARK_FILE unless the environment names one
    (tsa/gen_time.py: the genTime mark the workers of this host share), set in this process's
    environment only now, right before gunicorn forks them.
    """
    from ca.durations import format_duration

    if worker_class not in WORKER_CLASSES:
        raise ConfigurationError(f"worker class {worker_class!r} is not one of "
                                 f"{', '.join(WORKER_CLASSES)}")
    check_free(host, port)
    log_settings = configured() or configure()  # TINCAY_LOG_* (cli/logs.py)
    limits = limits or HttpLimits.from_env(os.environ)  # TINCAY_HTTP_*
    files_before, files, files_needed = raise_open_files(limits.connections)
    children: list[subprocess.Popen] = []
    counted_in = _metrics_directory()
    peers_in = _key_peers_directory()

    def when_ready(server: Any) -> None:
        server.log.info("Open files per process: %s (was %s); %s connections per worker",
                        files, files_before, limits.connections)
        if files < files_needed:
            server.log.warning("Open-file limit %s is below the %s that %s connections per "
                               "worker need: raise ulimit -n (hard) or lower "
                               "TINCAY_HTTP_CONNECTIONS", files, files_needed, limits.connections)
        if maintenance is not None:
            reload = ["--reload-pid", str(os.getpid())] if maintenance_args else []
            children.append(subprocess.Popen(
                [sys.executable, "-m", "cli.main", "maintain", "--interval",
                 format_duration(maintenance), *maintenance_args, *reload]))

    def on_exit(server: Any) -> None:
        for child in children:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        shutil.rmtree(counted_in, ignore_errors=True)
        shutil.rmtree(peers_in, ignore_errors=True)

    if tsa_mark_file and not os.environ.get("TINCAY_TSA_MARK_FILE"):
        os.environ["TINCAY_TSA_MARK_FILE"] = tsa_mark_file
    tls: dict[str, Any] = {"certfile": certfile, "keyfile": keyfile} if certfile else {}
    if certfile and client_ca:
        import ssl

        tls.update(cert_reqs=ssl.CERT_OPTIONAL, ca_certs=client_ca)
    TincayServer({
        **tls,
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers or os.cpu_count() or 1,
        "worker_class": WORKERS[worker_class],
        "threads": threads,
        "keepalive": max(1, round(limits.keepalive)),  # gthread closes idle connections then
        "worker_connections": limits.connections,  # gevent: its greenlet pool; gthread: too
        "reuse_port": True,  # one socket per worker: the kernel balances connections
        "timeout": 30,
        "graceful_timeout": 10,
        "preload_app": False,  # open DB pools and HSM sessions after the fork, per worker
        "accesslog": None,
        "errorlog": "-",
        "loglevel": log_settings.level,
        "proc_name": "tincay",
        # gunicorn's control socket is one path per user (~/.gunicorn/gunicorn.ctl) that every
        # instance would share; tincay is driven by signals (TERM, HUP), so none is opened
        "control_socket_disable": True,
        "when_ready": when_ready,
        "post_worker_init": _worker_ready,
        "logger_class": _Log,
        "on_exit": on_exit,
        "child_exit": _worker_exited,
    }, app_factory, limits).run()


def _worker_ready(worker: Any) -> None:
    """After "Booting worker": the app is loaded and its keys bound (found on the token, or
    during an HSM outage bound to their certificates' public keys); during a database outage
    the worker boots too and reads what it lacks once the database answers (web/app.py).

    A worker ignores SIGINT: Ctrl-C in a terminal reaches the whole process group, and the
    arbiter answers it by sending each worker SIGQUIT; a gevent worker handed both quit twice,
    the second time during interpreter shutdown, and printed a SystemExit traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker.log.info("Worker ready (pid: %s)", worker.pid)


def _metrics_directory() -> str:
    """A fresh private directory (mode 0700) for this server's metrics, which every worker
    (and the maintenance process) counts in and a scrape sums (ca.metrics): made before the
    fork, removed on exit, so no count of an earlier server is ever summed in."""
    from ca import metrics

    directory = tempfile.mkdtemp(prefix="tincay-metrics-")
    metrics.use_directory(directory)
    return directory


def _key_peers_directory() -> str:
    """A fresh private directory (mode 0700) for the workers' key-warming sockets
    (ca.services.key_peers), named to them in TINCAY_KEY_PEERS_DIR: made before the fork,
    removed on exit."""
    from ca.services.key_peers import PEERS_VARIABLE

    directory = tempfile.mkdtemp(prefix="tincay-key-peers-")
    os.environ[PEERS_VARIABLE] = directory
    return directory


def _worker_exited(server: Any, worker: Any) -> None:
    """A worker exited: its live gauges leave the sums (its counters stay, ca.metrics)."""
    from ca import metrics

    metrics.process_exited(worker.pid)


def check_free(host: str, port: int) -> None:
    """ConfigurationError if something listens on ``host:port`` already (without
    SO_REUSEPORT the bind fails; with it, a second server would silently share the port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigurationError(f"cannot serve on {host}:{port}: {exc.strerror}") from None


def worker_app() -> Any:
    """The app of one gunicorn worker, composed from the environment after the fork: its own
    database pool and its own PKCS#11 session (DESIGN.md section 5). `tincay serve` migrated
    the database before forking, so workers do not."""
    from ca.services.key_peers import PEERS_VARIABLE, KeyPeers
    from cli.context import AppContext
    from web.app import create_app

    service = AppContext(migrate=False).service
    app = create_app(service)
    peers = os.environ.get(PEERS_VARIABLE)
    if peers:  # the host's workers warm each other's subscriber keys (ca.services.key_peers)
        service.subscriber_keys.join_peers(KeyPeers(peers))
    return app
