"""The TLS client certificate of a request: where `tincay serve`'s workers put it in the WSGI
environ, and the registered client it authenticates (RFC 8705 tls_client_auth).

With a client-CA bundle (`tincay serve --client-ca PEM`, or tincay's own CAs with
``--tls-self``) gunicorn's ssl context asks every TLS client for a certificate (CERT_OPTIONAL:
a client without one is still served, and authenticates otherwise); OpenSSL verifies a
presented one against the bundle during the handshake and ends the handshake if it fails. Both
workers (cli/pywsgi_worker.py, cli/gthread_worker.py) then put the verified certificate's DER
under :data:`ENVIRON_KEY`, and leave the key out without one. A request header can never set
it (headers arrive as ``HTTP_*``), and a TLS-terminating proxy's connection carries none: the
certificate is read only from tincay's own TLS.

Which client the certificate names is ca.services.clients.Clients.by_certificate's to say (the
binding, its client's status, the certificate's validity and revocation, asked of the database
at every call); :func:`certificate_client` is the one call an adapter makes (web/oauth.py now,
the registration API per request next).
"""
from __future__ import annotations

import ssl
from typing import Any, Mapping, Protocol

from ca.services.clients import ClientInfo

ENVIRON_KEY = "tincay.client_certificate"


class CertificateAuthenticator(Protocol):
    """What certificate_client needs of ca.services.clients.Clients."""

    def by_certificate(self, der: bytes) -> ClientInfo: ...


def client_certificate(environ: Mapping[str, Any]) -> bytes | None:
    """The DER of the request's verified TLS client certificate, None without one."""
    der = environ.get(ENVIRON_KEY)
    return der if isinstance(der, bytes) and der else None


def certificate_client(environ: Mapping[str, Any],
                       clients: CertificateAuthenticator) -> ClientInfo | None:
    """The active client the request's TLS client certificate is bound to; None without a
    certificate. Raises the ca.errors.ClientAuthError subclass
    InvalidClientCertificateError (``.error`` invalid_client) for a certificate that is bound
    to no client, whose client is disabled, expired, or revoked or on hold in tincay's
    database."""
    der = client_certificate(environ)
    return None if der is None else clients.by_certificate(der)


def peer_certificate(sock: Any) -> bytes | None:
    """What a worker puts under :data:`ENVIRON_KEY`: the DER of the certificate the TLS peer
    on ``sock`` presented, when the socket's context asked for one (OpenSSL then verified it
    during the handshake); None for plain sockets, contexts that ask for none, and clients
    that sent none."""
    getpeercert = getattr(sock, "getpeercert", None)  # ssl's and gevent's TLS sockets
    if getpeercert is None:
        return None
    try:
        if sock.context.verify_mode == ssl.CERT_NONE:
            return None
        return getpeercert(binary_form=True) or None
    except (AttributeError, ValueError, OSError):  # no handshake yet, or the socket closed
        return None
