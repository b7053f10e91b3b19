"""A throwaway hierarchy served over real HTTP on loopback: the same app tincay serve's workers
run (web.app), in a background thread of the test process. The only part of ca.testing that
imports the web stack."""
from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any, Iterator

from werkzeug.serving import WSGIRequestHandler, make_server

from ca.services import CertificateAuthority
from web.app import create_app


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        """No access log on the test suite's output."""


@contextlib.contextmanager
def serve_on(listener: socket.socket, service: CertificateAuthority) -> Iterator[str]:
    """Serve ``service`` on ``listener`` (the port the certificates point at) until the block
    ends; yields the base URL. The listener stays open for a later re-serve."""
    server = make_server("127.0.0.1", 0, create_app(service), threaded=True,
                         request_handler=_QuietHandler, fd=listener.fileno())
    thread = threading.Thread(target=server.serve_forever, name="tincay-testing-serve",
                              daemon=True)
    thread.start()
    try:
        yield service.public_url
    finally:
        server.shutdown()
        thread.join()
        server.server_close()  # its duplicate of the listener; ours stays for a re-serve
