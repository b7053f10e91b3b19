"""A reference for the TSA benchmark: ``tincay serve``'s own app with the token log switched
off, served by the same gunicorn stack beside the real server.

The TSA target (issue 4) is a share of the constant-body ceiling "with every token durably
logged". Served side by side, this app and the real one differ only in the log, so their
paired rates tell how much of the gap to the target the durable log is and how much is left
without it (the HSM signature, the TSA core, HTTP). It grants tokens nobody records: a
benchmark reference only, never a way to run a TSA.
"""
from __future__ import annotations

from flask import Flask

from ca.timestamps import TimestampRecord
from cli.serve import worker_app


def create_app() -> Flask:
    app = worker_app()
    service = app.extensions["tincay.service"]

    def not_recorded(token: TimestampRecord) -> None:
        return None

    service.token_log.record = not_recorded  # this instance only: the reference server's
    return app
