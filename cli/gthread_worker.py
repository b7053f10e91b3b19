"""gunicorn's ``gthread`` worker with the bounds of cli/http_limits.py, for `tincay serve
--worker-class gthread`.

gunicorn's gthread worker hands a new connection to one of its few threads (4 by default),
which waits up to 5 s for a first byte and then reads the request with no deadline at all;
gunicorn's keepalive closes only connections idle between two requests. So 8 clients that send
a byte every few seconds held every thread of 2 workers, and no other client was answered
(measured on loopback: each probe waited out its 10-s timeout). Here the worker's main loop,
which already polls idle kept-alive connections, also gathers each request without blocking:
its head under ``header_timeout`` and then, when a single Content-Length gives its size (every
OCSP and TSA POST), its body under ``body_timeout``. A thread gets the connection only with the
whole request in memory, so a slow client costs a buffer, not a thread. A connection past its
deadline is closed. A chunked body, one past MAX_GATHERED or one sent after
``Expect: 100-continue`` is still read in the thread, as gunicorn does.

With TLS (``tincay serve --certfile``), gunicorn wraps the socket in the thread, at the first
read; here the main loop gathers decrypted bytes, so it also runs the TLS handshake, without
blocking, under the same header deadline (a client that stalls its handshake holds no
thread either). The thread gets the connection already wrapped and handshaken. With a
client-CA bundle (``--client-ca``) the app is wrapped once so each request's environ carries
the verified client certificate (web/client_cert.py), read from gunicorn's
``gunicorn.socket``.
"""
from __future__ import annotations

import errno
import re
import selectors
import ssl
from functools import partial
from time import monotonic
from typing import Any

from gunicorn import http
from gunicorn.sock import ssl_context
from gunicorn.workers.gthread import TConn, ThreadWorker

from cli.http_limits import HttpLimits
from web.client_cert import ENVIRON_KEY, peer_certificate

__all__ = ["TincayThreadWorker"]

MAX_GATHERED = 1024 * 1024  # bodies up to this size are gathered before a thread sees them
MAX_HEAD = 64 * 1024  # a longer head goes to gunicorn's parser, which refuses it
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]+)[ \t]*(?=\r\n)", re.IGNORECASE)
_IN_THREAD = re.compile(rb"\r\n(?:transfer-encoding|expect):", re.IGNORECASE)
_SWEEP = 0.25  # seconds between two looks for gathering connections past their deadline


def _body_length(head: bytes) -> int:
    """The body length to gather behind ``head`` (the request line and headers, ending with
    CRLF): its single Content-Length, or 0 when the body is left to the thread (chunked,
    100-continue, two lengths, which gunicorn's parser refuses)."""
    if _IN_THREAD.search(head):
        return 0
    lengths = _LENGTH.findall(head)
    if len(lengths) != 1 or head.lower().count(b"\r\ncontent-length") != 1:
        return 0
    length = int(lengths[0])
    return length if length <= MAX_GATHERED else 0


class _Gathering:
    """A request coming in on a connection the main loop polls: what arrived, by when the
    current phase must end, and how long the request is once its head is in."""

    __slots__ = ("data", "deadline", "size")

    def __init__(self, data: bytes, deadline: float) -> None:
        self.data, self.deadline, self.size = bytearray(data), deadline, -1


class TincayThreadWorker(ThreadWorker):
    """gunicorn's gthread worker that gathers each request in its main loop before a thread
    serves it (the module docstring says why)."""

    limits: HttpLimits

    def init_process(self) -> None:
        self.limits = getattr(self.app, "limits", None) or HttpLimits()
        self.gathering: dict[TConn, _Gathering] = {}
        self.next_sweep = 0.0
        # one context per worker (gunicorn's gthread builds one per connection)
        self.tls: ssl.SSLContext | None = ssl_context(self.cfg) if self.cfg.is_ssl else None
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        if self.tls is not None and self.tls.verify_mode != ssl.CERT_NONE:
            self.wsgi = _with_client_certificate(self.wsgi)

    def accept(self, listener: Any) -> None:
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        server = listener.getsockname()
        if self.tls is not None:  # the handshake runs in _on_readable, without blocking
            client.setblocking(False)
            client = self.tls.wrap_socket(client, server_side=True, do_handshake_on_connect=False,
                                          suppress_ragged_eofs=self.cfg.suppress_ragged_eofs)
        conn = TConn(self.cfg, client, address, server)
        conn.handshaken = self.tls is None
        self._gather(conn, b"")

    def on_client_socket_readable(self, conn: TConn, client: Any) -> None:
        """A kept-alive connection's next request: gathered too, not read in a thread."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._gather(conn, b"")

    def finish_request(self, conn: TConn, fs: Any) -> None:
        """A response sent with keep-alive while the client pipelined part of its next request
        (gunicorn would read its rest in a thread): the main loop gathers it."""
        if (self.alive and not fs.cancelled() and fs.exception() is None
                and fs.result() is True and (conn.parser.unreader.buf.getvalue()
                                             or self._tls_pending(conn))):
            self._gather(conn, conn.parser.unreader.take_buffered())
            return
        super().finish_request(conn, fs)

    def _gather(self, conn: TConn, data: bytes) -> None:
        conn.sock.setblocking(False)
        self.gathering[conn] = _Gathering(data, monotonic() + self.limits.header_timeout)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
        if data:
            self._take(conn, b"")
        elif self._tls_pending(conn):  # decrypted already: the socket will not turn readable
            self._on_readable(conn, conn.sock)

    @staticmethod
    def _tls_pending(conn: TConn) -> bool:
        return isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending() > 0

    def _on_readable(self, conn: TConn, client: Any) -> None:
        try:
            if not getattr(conn, "handshaken", True):
                conn.sock.do_handshake()
                conn.handshaken = True
            data = conn.sock.recv(65536)
            while self._tls_pending(conn):  # the rest of a record already decrypted
                data += conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return  # nothing (decrypted) to read yet
        except ssl.SSLZeroReturnError:
            data = b""  # the client closed its TLS session
        except ssl.SSLError:  # not TLS (plain HTTP to the https port), or a broken handshake
            self._drop(conn)
            return
        except OSError:
            data = b""
        if not data:  # the client closed (or half-closed) its side
            if self.gathering[conn].data:
                self._dispatch(conn)  # gunicorn's parser answers the broken request: 400
            else:
                self._drop(conn)
        else:
            self._take(conn, data)

    def _take(self, conn: TConn, data: bytes) -> None:
        gathering = self.gathering[conn]
        gathering.data += data
        if gathering.size < 0:
            end = gathering.data.find(b"\r\n\r\n")
            if end < 0:
                if len(gathering.data) > MAX_HEAD:
                    self._dispatch(conn)
                return
            gathering.size = end + 4 + _body_length(bytes(gathering.data[:end + 2]))
            gathering.deadline = monotonic() + self.limits.body_timeout
        if len(gathering.data) >= gathering.size:
            self._dispatch(conn)

    def _dispatch(self, conn: TConn) -> None:
        self.poller.unregister(conn.sock)
        conn.gathered = bytes(self.gathering.pop(conn).data)
        conn.data_ready = True  # gunicorn's handle() must not wait for data: it is here
        self.enqueue_req(conn)

    def handle(self, conn: TConn) -> Any:
        """In a thread: the gathered bytes go to the connection's parser first."""
        gathered = getattr(conn, "gathered", b"")
        if isinstance(conn.sock, ssl.SSLSocket) and not conn.initialized:
            # wrapped and handshaken by the main loop: gunicorn's init() would wrap it again
            conn.initialized = True
            conn.sock.setblocking(True)
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        if gathered:
            conn.gathered = b""
            conn.sock.setblocking(True)
            conn.init()  # the parser (once per connection)
            conn.parser.unreader.unread(gathered)
        return super().handle(conn)

    def murder_pending(self) -> None:
        """gunicorn's sweep of its deferred connections, and ours: a connection whose request
        did not arrive by its deadline is closed (all of them when the worker stops)."""
        super().murder_pending()
        now = monotonic()
        if now < self.next_sweep and self.alive:
            return
        self.next_sweep = now + _SWEEP
        for conn in [conn for conn, gathering in self.gathering.items()
                     if gathering.deadline <= now or not self.alive]:
            self._drop(conn)

    def _drop(self, conn: TConn) -> None:
        self.poller.unregister(conn.sock)
        del self.gathering[conn]
        self.nr_conns -= 1
        conn.close()


def _with_client_certificate(app: Any) -> Any:
    """``app`` with the TLS client certificate of each request under ENVIRON_KEY (gunicorn's
    environ names the connection's socket; a request without a certificate gets no key)."""
    def wrapped(environ: dict, start_response: Any) -> Any:
        der = peer_certificate(environ.get("gunicorn.socket"))
        if der is not None:
            environ[ENVIRON_KEY] = der
        return app(environ, start_response)

    return wrapped
