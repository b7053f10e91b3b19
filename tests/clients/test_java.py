"""Java as a client of `tincay serve`: the JDK's PKIX CertPathValidator with OCSP revocation
checking."""
from __future__ import annotations

import pytest

from tests.clients.conftest import Served, run, tool

pytestmark = pytest.mark.softhsm


def _java(classpath: str, *args: str) -> str:
    done = run([tool("java"), "-cp", classpath, *args])
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("nonce", ["no nonce: RFC 5019 GET of the pre-produced answer",
                                   "nonce: signed live"])
def test_certpath_validator_checks_revocation_by_ocsp(served: Served, java_classpath: str,
                                                      nonce: str) -> None:
    """CRL distribution points off, so only the OCSP answers (for the leaf, and for the
    issuing CA from the root's own key) can make a path valid; Java sends its requests by GET,
    with its own nonce where jdk.security.certpath.ocspNonce asks for one."""
    flags = ["-Dcom.sun.security.enableCRLDP=false"]
    if nonce.startswith("nonce"):
        flags.append("-Djdk.security.certpath.ocspNonce=true")
    out = _java(java_classpath, *flags, "OcspPath", str(served.root_der),
                str(served.issuing_der), str(served.good.der), str(served.revoked.der))
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    assert lines[str(served.good.der)] == "valid", out
    revoked = lines[str(served.revoked.der)]
    assert revoked.startswith("REVOKED index=0 "), out
    assert "revocationReason=KEY_COMPROMISE" in revoked and "Tincay Demo OCSP Responder" in revoked
