"""The APIs that carry secrets (/oauth2/ client secrets and tokens, /csc/ PINs, OTPs and
SADs, /api/ bearer tokens and subscribers' identity numbers) are refused over plain HTTP,
except from loopback.

OCSP, time-stamps, CRLs and CA certificates stay on plain HTTP (validators fetch them over
http:// URLs, and their answers are signed); a client secret or a PIN sent in clear to a
public address is as good as published, so the request is answered 403 before any handler
reads it, with the OAuth/CSC error body (an RFC 9457 problem under /api/, as the
registration API answers every refusal). Loopback (127.0.0.0/8, ::1) is served: the tests, a
local tool, and a reverse proxy on the same host that terminated TLS.

A reverse proxy on another host that terminates TLS says so with ``X-Forwarded-Proto: https``;
that header counts only from the addresses in gunicorn's ``forwarded_allow_ips``
(FORWARDED_ALLOW_IPS, default loopback): gunicorn's gthread worker rewrites ``wsgi.url_scheme``
from it for those peers alone, and tincay's pywsgi worker does the same
(cli/pywsgi_worker.py). This middleware reads only ``wsgi.url_scheme`` and REMOTE_ADDR, never
the header itself.
"""
from __future__ import annotations

import ipaddress
import json
from typing import Callable, Iterable

PROTECTED = ("/oauth2/", "/csc/", "/api/")
_TEXT = "this API requires TLS: use https://"
_BODY = json.dumps({"error": "invalid_request", "error_description": _TEXT}).encode()
_PROBLEM = json.dumps({"type": "urn:tincay:problem:tls-required", "title": "Forbidden",
                       "status": 403, "detail": _TEXT}).encode()


def is_loopback(address: str | None) -> bool:
    """Whether ``address`` (REMOTE_ADDR) is 127.0.0.0/8 or ::1 (also ::ffff:127.x)."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


class RequireTls:
    """WSGI middleware: requests under ``prefixes`` need https, or a loopback peer."""

    def __init__(self, app: Callable, prefixes: tuple[str, ...] = PROTECTED) -> None:
        self.app = app
        self.prefixes = prefixes

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = "/" + environ.get("PATH_INFO", "").lstrip("/")  # "//csc/" routes as "/csc/"
        if (path.startswith(self.prefixes) and environ.get("wsgi.url_scheme") != "https"
                and not is_loopback(environ.get("REMOTE_ADDR"))):
            problem = path.startswith("/api/")
            body = _PROBLEM if problem else _BODY
            start_response("403 Forbidden", [
                ("Content-Type", "application/problem+json" if problem else "application/json"),
                ("Content-Length", str(len(body))), ("Cache-Control", "no-store")])
            return [body]
        return self.app(environ, start_response)
