"""What `tincay serve` allows an HTTP client: how long it may take to send a request, how many
connections a worker holds, and which message framings it accepts.

Slow clients: a worker serves every connection it holds, so a client that sends its request
a byte every few seconds (or nothing) holds a connection slot and a file descriptor for as long
as the server lets it. gevent's WSGI server has no deadline of its own, and gunicorn capped a
gevent worker at 1,000 connections: about 2,100 such clients against 2 workers stopped every
other client. The bounds here are total deadlines (a byte now and then does not renew them),
and the connection cap is set so high that sockets held until their deadline are not what
runs out (cli/pywsgi_worker.py and cli/gthread_worker.py apply them).

Framing (RFC 9112 section 6): a body's length is taken from exactly one Content-Length or from
``Transfer-Encoding: chunked``, never from both; a proxy in front that reads the other header
than we do would see our second request where it saw a body, or the reverse (request
smuggling). Anything ambiguous is refused and the connection closed: by
:func:`framing_refusal` under gevent, which accepted all of it; gunicorn's own parser
(gthread) refuses the same requests.

Pure: no gevent, no gunicorn; read in the arbiter before the workers fork.
"""
from __future__ import annotations

import resource
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Mapping

from pydantic import BeforeValidator, ConfigDict, Field

from ca.validation import (FieldError, InputModel, PositiveDurationVariable, read_variables,
                           variable_text)

HEADER_TIMEOUT = timedelta(seconds=10)  # request line and headers, from accept or first byte
BODY_TIMEOUT = timedelta(seconds=10)  # the whole body, from the end of the headers
KEEPALIVE = timedelta(seconds=5)  # an idle kept-alive connection, between two requests
CONNECTIONS = 4096  # per worker; gunicorn's default (1,000) ran out under slow clients
SPARE_FILES = 256  # descriptors a worker needs beside its connections (database, HSM, logs)


def _count(value: object) -> object:
    text = variable_text(value)
    if text is None:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 1_000_000:
        raise FieldError(f"{text!r} is not a number of connections (1 to 1000000)")
    return int(text)


class HttpEnvironment(InputModel):
    """The TINCAY_HTTP_* variables; every other variable of the environment is ignored."""

    model_config = ConfigDict(extra="ignore")

    header_timeout: PositiveDurationVariable = Field(None, alias="TINCAY_HTTP_HEADER_TIMEOUT")
    body_timeout: PositiveDurationVariable = Field(None, alias="TINCAY_HTTP_BODY_TIMEOUT")
    keepalive: PositiveDurationVariable = Field(None, alias="TINCAY_HTTP_KEEPALIVE")
    connections: Annotated[int | None, BeforeValidator(_count)] = Field(
        None, alias="TINCAY_HTTP_CONNECTIONS")


@dataclass(frozen=True)
class HttpLimits:
    """The bounds, in seconds (what gevent.Timeout and gunicorn take)."""

    header_timeout: float = HEADER_TIMEOUT.total_seconds()
    body_timeout: float = BODY_TIMEOUT.total_seconds()
    keepalive: float = KEEPALIVE.total_seconds()
    connections: int = CONNECTIONS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "HttpLimits":
        """ConfigurationError naming the variable for a bad value; a zero duration too (it
        would close every connection before its request)."""
        variables = read_variables(HttpEnvironment, env)
        seconds: dict[str, float | int] = {}
        for name in ("header_timeout", "body_timeout", "keepalive"):
            value = getattr(variables, name)
            if value is not None:
                seconds[name] = value.total_seconds()
        if variables.connections is not None:
            seconds["connections"] = variables.connections
        return cls(**seconds)


def raise_open_files(connections: int) -> tuple[int, int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (workers inherit it), since
    every connection a worker holds is a descriptor. Returns (before, now, needed): the caller
    warns when ``now`` is below ``needed``, what ``connections`` per worker take."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    now = soft
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            now = hard
        except (ValueError, OSError):  # an infinite hard limit can exceed the kernel's nr_open
            pass
    needed = connections + SPARE_FILES
    if now == resource.RLIM_INFINITY:
        now = needed
    return soft, now, needed


Refusal = tuple[int, str]  # HTTP status, reason


def framing_refusal(version: str, lengths: list[str] | None,
                    encodings: list[str] | None) -> Refusal | None:
    """Why a request cannot frame its body unambiguously, or None, from the values of its
    Content-Length headers and of its Transfer-Encoding headers (None when there are none,
    as email.message's get_all gives them).

    Refused with 400: two Content-Length headers (even equal ones) or one that is not digits
    (``+5``, ``5, 5``, ``0x5``: int() would take some of them); Content-Length together with
    Transfer-Encoding; Transfer-Encoding in HTTP/1.0 or whose last coding is not chunked
    (``xchunked``, ``chunked, gzip``); either header folded over lines. 501 for a coding
    before chunked (``gzip, chunked``), which we do not decode.
    """
    if not lengths and not encodings:  # most requests: a GET
        return None
    if any("\n" in value or "\r" in value for value in (*(lengths or ()), *(encodings or ()))):
        return 400, "Content-Length or Transfer-Encoding folded over lines"
    lengths = [value.strip() for value in lengths or ()]
    codings = [coding.strip().lower() for value in encodings or () for coding in value.split(",")]
    if len(lengths) > 1:
        return 400, "more than one Content-Length"
    if lengths and not (lengths[0].isascii() and lengths[0].isdigit()):
        return 400, "Content-Length is not a number of bytes"
    if not codings:
        return None
    if lengths:
        return 400, "both Content-Length and Transfer-Encoding"
    if version != "HTTP/1.1":
        return 400, f"Transfer-Encoding in an {version} request"
    if codings[-1] != "chunked":
        return 400, "Transfer-Encoding does not end with chunked"
    if len(codings) > 1:
        return 501, "only the chunked transfer coding is supported"
    return None
