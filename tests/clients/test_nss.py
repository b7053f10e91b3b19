"""NSS as a client of `tincay serve`: vfychain (libpkix, CERT_PKIXVerifyCert) with OCSP for
the leaf and the chain, fresh information required, failing when there is none."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.clients.conftest import Served, run, tool

pytestmark = pytest.mark.softhsm

OCSP_REQUIRED = ["-h", "requireFreshInfo", "-m", "ocsp", "-s", "failIfNoInfo"]


def test_vfychain_checks_leaf_and_chain_by_ocsp(served: Served, tmp_path: Path) -> None:
    db = f"sql:{tmp_path / 'nss'}"
    (tmp_path / "nss").mkdir()
    made = run([tool("certutil"), "-N", "-d", db, "--empty-password"])
    assert made.returncode == 0, made.stdout + made.stderr
    trusted = run([tool("certutil"), "-A", "-d", db, "-n", "tincay demo root", "-t", "C,C,C",
                   "-i", str(served.root_der)])
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr

    def vfychain(leaf: Path) -> tuple[int, str]:
        done = run([tool("vfychain"), "-d", db, "-pp", "-v", "-u", "4",  # 4: email signer
                    "-g", "leaf", *OCSP_REQUIRED, "-g", "chain", *OCSP_REQUIRED,
                    str(leaf), str(served.issuing_der)])
        return done.returncode, done.stdout + done.stderr

    status, out = vfychain(served.good.der)
    assert status == 0 and "Chain is good!" in out, out
    assert 'Root Certificate Subject:: "CN=Tincay Demo Root CA' in out, out
    status, out = vfychain(served.revoked.der)
    assert status != 0 and "Chain is bad!" in out, out
    assert "ERROR -8180: Peer's Certificate has been revoked." in out, out
