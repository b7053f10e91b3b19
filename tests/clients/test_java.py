"""Java as a client of `tincay serve`: the JDK's PKIX CertPathValidator with OCSP revocation
checking, jarsigner with tincay's TSA, and Bouncy Castle's TSP API validating tincay tokens."""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
from asn1crypto import cms

from tests.clients.conftest import PASSWORD, Served, run, tool

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


def test_jarsigner_timestamps_with_the_tsa_and_verifies_strictly(served: Served,
                                                                 tmp_path: Path) -> None:
    """`jarsigner -tsa` with a tincay-issued key, then `-verify -strict` against a keystore
    trusting only the root: the TSA's chain has to come from the token itself."""
    unsigned, signed = tmp_path / "app.jar", tmp_path / "signed.jar"
    with zipfile.ZipFile(unsigned, "w") as jar:
        entry = zipfile.ZipInfo("record.txt")
        entry.external_attr = 0  # no POSIX modes: jarsigner would warn they are unsigned
        jar.writestr(entry, "Bệnh án điện tử")
    signing = run([tool("jarsigner"), "-keystore", str(served.good.p12), "-storetype", "PKCS12",
                   "-storepass", PASSWORD, "-tsa", served.tsa, "-signedjar", str(signed),
                   str(unsigned), "signer"])
    assert signing.returncode == 0 and "jar signed." in signing.stdout, \
        signing.stdout + signing.stderr
    trust = tmp_path / "trust.p12"
    imported = run([tool("keytool"), "-importcert", "-noprompt", "-alias", "root", "-file",
                    str(served.root_der), "-keystore", str(trust), "-storetype", "PKCS12",
                    "-storepass", PASSWORD])
    assert imported.returncode == 0, imported.stdout + imported.stderr
    verified = run([tool("jarsigner"), "-verify", "-verbose", "-certs", "-strict", "-keystore",
                    str(trust), "-storepass", PASSWORD, str(signed)])
    out = verified.stdout + verified.stderr
    assert verified.returncode == 0 and "jar verified." in out, out
    assert "chain is invalid" not in out and "not validated" not in out, out
    assert re.search(r'Timestamped by "CN=Tincay Demo TSA, [^"]*" on ', out), out
    tsa_block = out.split(">>> TSA", 1)[1].split("\n\n", 1)[0]
    assert "CN=Tincay Demo Issuing CA" in tsa_block, out  # the chain jarsigner showed

    with zipfile.ZipFile(signed) as jar:
        block = cms.ContentInfo.load(jar.read("META-INF/SIGNER.EC"))
    unsigned_attrs = block["content"]["signer_infos"][0]["unsigned_attrs"]
    token = next(a["values"][0] for a in unsigned_attrs
                 if a["type"].native == "signature_time_stamp_token")
    names = sorted(c.chosen.subject.native["common_name"] for c in token["content"]["certificates"])
    assert names == ["Tincay Demo Issuing CA", "Tincay Demo TSA"]  # the chain, without the root


@pytest.fixture(scope="module")
def bouncy_castle(served: Served, java_classpath: str) -> dict[str, str]:
    """One JVM asks the TSA with a 64-bit and a 256-bit nonce; the verdict per size."""
    out = _java(java_classpath, "BcTimeStamp", served.tsa, str(served.root_der), "64", "256")
    return dict(line.split(": ", 1) for line in out.splitlines())


def test_bouncy_castle_validates_response_and_token(bouncy_castle: dict[str, str]) -> None:
    """TimeStampResponse.validate against the request, the token's chain under PKIX to the
    root, TimeStampToken.validate with the TSA certificate's verifier; a 64-bit nonce."""
    assert re.fullmatch(r"ok chain=2 serial=\d+", bouncy_castle["64"]), bouncy_castle


# fails until issue 19's fix for nonces of 33 octets (the TSA refused more than 32) is merged
def test_bouncy_castle_with_a_256_bit_nonce(bouncy_castle: dict[str, str]) -> None:
    """A 256-bit nonce with its top bit set is a 33-octet INTEGER (a sign octet first): RFC
    3161 sets no bound, and clients send 256-bit nonces (tsp-client always does)."""
    assert re.fullmatch(r"ok chain=2 serial=\d+", bouncy_castle["256"]), bouncy_castle
