"""Go as a client of `tincay serve`: golang.org/x/crypto/ocsp builds the requests, POSTs and
GETs them, and checks each answer's signature against the issuer (tests/clients/go)."""
from __future__ import annotations

import pytest

from tests.clients.conftest import Served, run

pytestmark = pytest.mark.softhsm


def test_x_crypto_ocsp_post_and_get(served: Served, go_ocspcheck: str) -> None:
    done = run([go_ocspcheck, served.ocsp, str(served.issuing_pem), str(served.good.pem),
                str(served.revoked.pem)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        f"{served.good.pem} POST: good", f"{served.good.pem} GET: good",
        f"{served.revoked.pem} POST: revoked reason=1",  # keyCompromise
        f"{served.revoked.pem} GET: revoked reason=1"], done.stdout
