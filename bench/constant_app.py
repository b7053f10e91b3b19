"""The ceiling for the HTTP benchmarks: the same Flask + gunicorn stack as ``tincay serve``
answering every POST and GET with a constant 1.5 kB body (about an OCSP response's size)."""
from __future__ import annotations

from flask import Flask, Response

BODY = bytes(range(256)) * 6  # 1,536 bytes


def create_app() -> Flask:
    app = Flask("tincay-bench-constant")

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
    @app.route("/<path:path>", methods=["GET", "POST"])
    def constant(path: str) -> Response:
        return Response(BODY, mimetype="application/octet-stream")

    return app
