"""tsp-client (PyPI) as a client of `tincay serve`'s TSA, run from its own virtual environment
(`make test-deps` makes it at .venv/tsp-client: tsp-client pins pyOpenSSL<24, hence a
cryptography far older than the one tincay and pyHanko need)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.clients.conftest import HERE, Served, run

pytestmark = pytest.mark.softhsm

PYTHON = Path(sys.prefix) / "tsp-client" / "bin" / "python"


@pytest.fixture(scope="module")
def verdicts(served: Served) -> dict[str, str]:
    assert PYTHON.is_file(), f"{PYTHON} missing: `make test-deps` installs tsp-client there"
    done = run([str(PYTHON), str(HERE / "tsp_client_check.py"), served.tsa,
                str(served.root_pem), "verify", "sign"])
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(line.split(": ", 1) for line in done.stdout.splitlines())


def test_tsp_verifier_accepts_the_token(verdicts: dict[str, str]) -> None:
    """A 64-bit nonce: signature, imprint, nonce, ESSCertIDv2, EKU, chain to the root."""
    assert re.fullmatch(r"ok serial=\d+", verdicts["verify"]), verdicts


# fails until issue 19's fix for nonces of 33 octets (the TSA refused more than 32) is merged;
# tsp-client then reports the refusal as a parse error (asn1crypto wants a token in every reply)
def test_tsp_signer_end_to_end(verdicts: dict[str, str]) -> None:
    """The client's own request, with its 256-bit nonce (held to a 33-octet INTEGER)."""
    assert re.fullmatch(r"ok serial=\d+", verdicts["sign"]), verdicts
