"""The WSGI endpoint the hot protocols (OCSP, RFC 3161, CSC signing) are served by, in front
of Flask.

A protocol's path is a service's hot path: the endpoint reads the body as Content-Length
octets, hands it to the protocol's pure core and answers with a plain WSGI triple, never
building a Flask request or response. New hot protocols subclass :class:`ProtocolEndpoint`.
"""
from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Callable, Iterable

from werkzeug.wsgi import get_input_stream

_CLOSE = ("Connection", "close")


Refusal = tuple  # (status, text, *headers): the arguments of plain()


def read_protocol_body(environ: dict, content_type: str, limit: int, what: str
                       ) -> bytes | Refusal:
    """The body of a DER protocol POST (OCSP, RFC 3161) from the WSGI ``environ``, or the
    HTTP refusal a client gets before the protocol layer sees anything, as the arguments of
    :func:`plain`: 415 for another Content-Type (parameters and case ignored), then
    :func:`read_body`'s refusals."""
    if media_type(environ) != content_type:
        return 415, f"Content-Type must be {content_type}"
    return read_body(environ, limit, what)


def media_type(environ: dict) -> str:
    """The request's Content-Type without parameters, lower case ("" when absent)."""
    return environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()


def read_body(environ: dict, limit: int, what: str) -> bytes | Refusal:
    """A request body of at most ``limit`` bytes, or the refusal as :func:`plain`'s
    arguments: 413 past ``limit`` (checked on the header first, then on what was read, for
    chunked uploads), 400 for a body that broke off (the client closed early or garbled the
    chunking: no protocol answer, and ``Connection: close``, since the rest of the stream
    cannot be framed). Shared by the DER protocols and the CSC API (web/csc.py)."""
    too_large = 413, f"{what} are limited to {limit} bytes"
    try:
        length = int(environ.get("CONTENT_LENGTH") or -1)
    except ValueError:
        length = -1
    if length > limit:
        return too_large
    try:  # exactly Content-Length octets, as PEP 3333 allows; werkzeug's guard for chunked
        body = environ["wsgi.input"].read(length) if length >= 0 else \
            get_input_stream(environ, max_content_length=None).read(limit + 1)
    except Exception:  # noqa: BLE001 - each server has its own (OSError, werkzeug's
        # ClientDisconnected, gunicorn's ParseException): all say the upload broke off
        return 400, "the body broke off before its end", _CLOSE
    if len(body) < length:
        return 400, f"the body ended after {len(body)} of its {length} bytes", _CLOSE
    return too_large if len(body) > limit else body


Answer = tuple[str, Iterable[tuple[str, str]], bytes]  # WSGI status line, headers, body


class ProtocolEndpoint:
    """WSGI middleware serving one hot protocol (OCSP, RFC 3161, CSC) in front of the Flask
    app.

    The protocols' paths are the services' hot paths: a validator's OCSP question or a
    signer's time-stamp costs the core a fraction of a millisecond, and Flask's request
    context, routing and response object cost about as much again (OCSP's pre-produced
    answers reached 51% of the constant-body ceiling through Flask, 100% without). Subclasses
    say which paths are theirs (:meth:`serves`) and answer them (:meth:`answer`); every other
    path goes on to ``app`` unchanged. A bug is logged and answered 500 without a traceback.
    """

    log = logging.getLogger("tincay")

    def __init__(self, app: Callable) -> None:
        self.app = app

    def serves(self, path: str) -> bool:
        raise NotImplementedError

    def answer(self, environ: dict, path: str) -> Answer:
        raise NotImplementedError

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not self.serves(path):
            return self.app(environ, start_response)
        try:
            status, headers, body = self.answer(environ, path)
        except Exception:  # noqa: BLE001 - a bug: logged, never a traceback to clients
            self.log.exception("%s endpoint failed", type(self).__name__)
            status, headers, body = plain(500, "Internal Server Error")
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]


def plain(code: int, text: str, *headers: tuple[str, str]) -> Answer:
    """A text/plain answer ``<code> <text>``, with any extra headers."""
    return f"{code} {HTTPStatus(code).phrase}", \
        (("Content-Type", "text/plain; charset=utf-8"), *headers), f"{code} {text}\n".encode()
