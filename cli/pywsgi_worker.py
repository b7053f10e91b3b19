"""gunicorn's ``gevent_pywsgi`` worker with the bounds of cli/http_limits.py: `tincay serve`'s
default worker (cli/serve.py says why pywsgi).

gevent's WSGI handler waits for a request line, headers and body for as long as a client takes
to send them, and keeps an idle connection open forever (gunicorn's keepalive setting does not
reach pywsgi). Here each phase runs under a total deadline (one gevent.Timeout, not a socket
timeout, which a byte every few seconds would renew):

- request line and headers: ``header_timeout`` from the connection's accept, or from the first
  byte of a kept-alive connection's next request; expired, the connection is closed (after
  a 408 if the request line was in);
- between two requests on one connection: ``keepalive`` for the next request's first byte;
- the body: ``body_timeout`` for all of it, from its first read (the protocol endpoints read
  it at once, gevent reads what an app leaves); expired, a read of ``wsgi.input`` fails (the
  protocol endpoints answer 400 with ``Connection: close``, web/protocol.py) and the connection
  is closed after the response.

With TLS (``tincay serve --certfile``) the handshake is deferred to the first read, so it runs
under the header deadline too (gevent's server would otherwise complete it, with no deadline,
before the handler starts). gevent's handler knows nothing of gunicorn's
``forwarded_allow_ips``: :meth:`BoundedHandler.get_environ` applies it as gunicorn's own parser
does, so ``wsgi.url_scheme`` says https for a TLS-terminating proxy among those addresses, and
only for one (web/tls.py relies on it).

With a client-CA bundle (``--client-ca``) the handler also puts the connection's verified TLS
client certificate in each request's environ (web/client_cert.py), read once per connection.

The headers are also checked for an ambiguous framing (cli.http_limits.framing_refusal) before
gevent reads a body by them: refused with 400 or 501, the connection closed.
"""
from __future__ import annotations

import ipaddress
import logging
import re
from time import monotonic
from typing import Any, Callable, ClassVar, Iterator

import gevent
from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler, PyWSGIServer

from cli.http_limits import HttpLimits, framing_refusal
from web.client_cert import ENVIRON_KEY, peer_certificate

__all__ = ["TincayPyWSGIWorker"]


class _Expired(OSError):
    """A deadline passed: raised into the reading greenlet by gevent.Timeout. An OSError, so
    gevent's handler treats it as the connection failing (closes it, no traceback)."""


class _Refused(ValueError):
    """A request refused before the app sees it; gevent answers a ValueError from
    read_request through _handle_client_error, which we extend to send our status."""

    def __init__(self, status: int, reason: str, log: bool = True) -> None:
        super().__init__(reason)
        self.status, self.reason, self.log = status, reason, log


_PHRASES = {400: "Bad Request", 408: "Request Timeout", 501: "Not Implemented"}


class _BoundedInput:
    """``wsgi.input`` whose reads must be done by the handler's body deadline: ``timer``, one
    gevent.Timeout per request body, runs from the first read until the body is complete (a
    Content-Length body: no timer left running into the app); a chunked body, whose end shows
    only at its last chunk, gets a timer per read for what is left of the deadline. After the
    deadline every read fails and :attr:`expired` tells the handler to close the connection."""

    __slots__ = ("_input", "_timer", "_deadline", "expired")

    def __init__(self, body: Any, timer: gevent.Timeout, seconds: float) -> None:
        self._input, self._timer, self.expired = body, timer, False
        self._deadline = monotonic() + seconds

    def _bounded(self, read: Callable[..., Any], *args: Any) -> Any:
        body = self._input
        try:
            if self.expired:
                raise _Expired
            if body.chunked_input:
                remaining = self._deadline - monotonic()
                if remaining <= 0:
                    raise _Expired
                with gevent.Timeout(remaining, _Expired):
                    return read(*args)
            if body.position >= body.content_length:  # all read: nothing blocks
                return read(*args)
            if not self._timer.pending:
                self._timer.start()
            data = read(*args)
            if body.position >= body.content_length:
                self._timer.cancel()
            return data
        except _Expired:
            self.expired = True
            self._timer.cancel()
            raise _Expired("the request body did not arrive in time") from None

    def read(self, length: int | None = None) -> bytes:
        return self._bounded(self._input.read, length)

    def readline(self, size: int | None = None) -> bytes:
        return self._bounded(self._input.readline, size)

    def readlines(self, hint: int | None = None) -> list[bytes]:
        return self._bounded(self._input.readlines, hint)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def _discard(self) -> None:  # gevent reads what the app left, to reach the next request
        self._bounded(self._input._discard)
        self._timer.cancel()


class BoundedHandler(PyWSGIHandler):
    """gunicorn's pywsgi handler (access log, environ) with deadlines and framing checks.

    Each deadline is a gevent.Timeout made afresh for each wait (:func:`_restarted`): gevent
    resumes a cancelled timer with the time it had left, so one Timeout re-started per request
    was a budget for the whole connection. A request pays a few microseconds for its bounds."""

    limits: ClassVar[HttpLimits] = HttpLimits()
    cfg: ClassVar[Any] = None  # gunicorn's configuration: forwarded_allow_ips
    _head: gevent.Timeout | None = None  # request line and headers
    _idle: gevent.Timeout | None = None  # between two requests
    _body: gevent.Timeout | None = None  # the request's body
    _peer: bytes | None | bool = False  # the TLS client certificate, read at the first request

    def handle(self) -> None:
        try:
            super().handle()
        except _Expired:  # a deadline hit while gevent wrote an error answer: nothing to do
            pass
        finally:
            for timer in (self._head, self._idle, self._body):
                if timer is not None:
                    timer.close()

    def read_requestline(self) -> str:
        if self.requestline is not None:  # a kept-alive connection: its next request
            self._idle = _restarted(self._idle, self.limits.keepalive)
            try:
                self.rfile.peek(1)  # at once when the client pipelined it
            finally:
                self._idle.cancel()
        self._head = head = _restarted(self._head, self.limits.header_timeout)
        line = super().read_requestline()
        if not line.endswith("\n"):  # end of stream, or too long: gevent closes, no headers
            head.cancel()
        return line

    def read_request(self, raw_requestline: str) -> bool:
        try:
            return super().read_request(raw_requestline)
        except _Expired:
            raise _Refused(408, "the request headers did not arrive in time", log=False) from None
        finally:
            if self._head is not None:
                self._head.cancel()

    def MessageClass(self, *args: Any) -> Any:  # noqa: N802 - gevent's name
        """The headers, refused before gevent frames a body by them (gevent drops
        Content-Length when chunked, and takes the first of two Content-Lengths)."""
        headers = super().MessageClass(*args)
        if headers.defects:  # a line without a colon ("Transfer-Encoding : chunked"), ...
            raise _Refused(400, "malformed header line")
        refusal = framing_refusal(self.request_version, headers.get_all("content-length"),
                                  headers.get_all("transfer-encoding"))
        if refusal is not None:
            raise _Refused(*refusal)
        return headers

    def get_environ(self) -> dict:
        environ = super().get_environ()
        body = self.wsgi_input
        if environ["wsgi.input"] is body and (body.content_length or body.chunked_input):
            if self._body is not None:  # the last request's, cancelled: a fresh one (unstarted)
                self._body.close()
            self._body = gevent.Timeout(self.limits.body_timeout, _Expired)
            environ["wsgi.input"] = self.wsgi_input = _BoundedInput(
                body, self._body, self.limits.body_timeout)
        if environ.get("wsgi.url_scheme") != "https" and self.cfg is not None:
            environ["wsgi.url_scheme"] = forwarded_scheme(self.cfg, environ)
        if self._peer is False:  # once per connection: the handshake is behind us now
            self._peer = peer_certificate(self.socket)
        if self._peer:
            environ[ENVIRON_KEY] = self._peer
        return environ

    def handle_one_response(self) -> None:
        super().handle_one_response()
        if getattr(self.wsgi_input, "expired", False):
            self.close_connection = True  # the body's rest is still coming: no next request

    def _handle_client_error(self, ex: Exception) -> tuple[str, bytes]:
        if not isinstance(ex, _Refused):
            return super()._handle_client_error(ex)
        if ex.log:
            self.log_error("(from %s) refused: %s", self.client_address, ex.reason)
        self.close_connection = True
        text = f"{ex.status} {ex.reason}\n".encode()
        return str(ex.status), (
            f"HTTP/1.1 {ex.status} {_PHRASES[ex.status]}\r\nConnection: close\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(text)}\r\n\r\n"
        ).encode() + text


def _restarted(timer: gevent.Timeout | None, seconds: float) -> gevent.Timeout:
    """A deadline ``seconds`` from now, started, in place of ``timer`` (closed). Not
    ``timer.start()`` again: gevent's libev timer, cancelled and started, resumes with the time
    it had left, so a keep-alive bound re-started per request closed a busy connection after
    5 s of waits in all (wrk -c32 saw every connection dropped once per 5-6 s, a request in
    flight). Measured: 3.3 us to make, start, cancel and close one, against 1.1 us to
    re-start and cancel one."""
    if timer is not None:
        timer.close()
    fresh = gevent.Timeout(seconds, _Expired)
    fresh.start()
    return fresh


def forwarded_scheme(cfg: Any, environ: dict) -> str:
    """The scheme a trusted proxy's headers say (gunicorn's ``secure_scheme_headers``, such as
    ``X-Forwarded-Proto: https``), as gunicorn's parser reads them: only from a peer in
    ``forwarded_allow_ips``; from anyone else, and when two headers disagree, the
    connection's own scheme."""
    scheme = environ.get("wsgi.url_scheme", "http")
    headers = cfg.secure_scheme_headers or {}
    # the headers first: most requests carry none, and then who sent them does not matter
    # (the peer's trust, an address parsed and matched, was 6% of a pre-produced OCSP answer)
    said = {"https" if environ[key] == secure else "http" for name, secure in headers.items()
            if (key := "HTTP_" + name.upper().replace("-", "_")) in environ}
    if len(said) != 1 or not _trusted(cfg, environ.get("REMOTE_ADDR", "")):
        return scheme
    return said.pop()


def _trusted(cfg: Any, peer: str) -> bool:
    if "*" in cfg.forwarded_allow_ips:
        return True
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(ip in network for network in cfg.forwarded_allow_networks())


class _ErrorLog:
    """gevent's error stream (its handler's log_error: a client's garbled request, a refusal
    above) as warnings of the ``tincay.http`` logger, instead of raw lines on stderr: the log
    keeps one format (cli/logs.py). A client's mistake, not the server's: a warning."""

    log = logging.getLogger("tincay.http")
    _SOCKET = re.compile(r"^<[^>]*socket[^>]*>: ")  # gevent's prefix: the socket's repr

    def write(self, message: str) -> None:
        if message.strip():
            self.log.warning(self._SOCKET.sub("", message.rstrip()))

    def flush(self) -> None:
        pass


class _Server(PyWSGIServer):
    """gunicorn's pywsgi server, its TLS handshake left to the handler's first read (under
    the header deadline) instead of done before the handler starts; its error stream into
    the log (:class:`_ErrorLog`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "ssl_context" in kwargs:
            kwargs.setdefault("do_handshake_on_connect", False)
        kwargs.setdefault("error_log", _ErrorLog())
        super().__init__(*args, **kwargs)


class TincayPyWSGIWorker(GeventPyWSGIWorker):
    """gunicorn's pywsgi worker serving through :class:`BoundedHandler`, with the limits the
    arbiter read (cli.serve: ``app.limits``); gunicorn's ``worker_connections`` and
    ``keepalive`` settings carry the connection cap and the keep-alive bound."""

    def init_process(self) -> None:
        limits = getattr(self.app, "limits", None) or HttpLimits()
        self.wsgi_handler = type("BoundedHandler", (BoundedHandler,),
                                 {"limits": limits, "cfg": self.cfg})
        self.server_class = _Server
        super().init_process()
