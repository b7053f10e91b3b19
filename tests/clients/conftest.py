"""One `tincay serve` for every outside client in this package (Java, Bouncy Castle, NSS, Go,
tsp-client): the demo hierarchy on SoftHSM, under gunicorn on loopback, with a good and a
revoked end-entity certificate whose AIA points at the served OCSP responder.

The clients are other people's code judging ours, so a missing one is a failure, not a skip:
`make test` installs them (`.ci/system-deps --test` the Debian packages, the Makefile
tsp-client's own virtual environment), as it does openssl and ocsptool.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
BOUNCY_CASTLE = [Path("/usr/share/java") / f"{jar}.jar" for jar in ("bcprov", "bcpkix", "bcutil")]
TINCAY = str(Path(sys.executable).parent / "tincay")
PASSWORD = "tincay"  # throwaway keystores of throwaway keys
SEAL = "C=VN, O=Sở Y tế, CN=Sở Y tế {n}, UID=MST:0400260612"


def tool(name: str) -> str:
    """The path of an outside client; fails (never skips) when it is missing."""
    found = shutil.which(name)
    assert found, f"{name} is not installed: run `make test-deps` as root (.ci/system-deps --test)"
    return found


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """A client run with its output kept for the assertion message; checked by the caller."""
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


@dataclasses.dataclass(frozen=True)
class Leaf:
    """An end-entity certificate of the demo's issuing CA, with a key made here."""

    serial: str  # hex, as `tincay revoke` takes it
    pem: Path
    der: Path
    p12: Path  # key, certificate and chain; password PASSWORD, alias "signer"


@dataclasses.dataclass(frozen=True)
class Served:
    """The running server and the files a client needs."""

    url: str
    home: Path
    env: dict[str, str]
    root_pem: Path
    root_der: Path
    issuing_pem: Path
    issuing_der: Path
    good: Leaf
    revoked: Leaf

    @property
    def ocsp(self) -> str:
        return f"{self.url}/ocsp"

    @property
    def tsa(self) -> str:
        return f"{self.url}/tsa"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _leaf(n: int, folder: Path, env: dict[str, str], chain: list[x509.Certificate]) -> Leaf:
    """A P-256 key made here, certified by `tincay issue --csr` (organization-seal: its key
    usage includes digitalSignature, which jarsigner wants)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"leaf {n}")]))
           .sign(key, hashes.SHA256()))
    csr_path = folder / f"leaf{n}.csr"
    csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    pem = folder / f"leaf{n}.pem"
    issued = run([TINCAY, "issue", "--ca", "issuing-ca", "--profile", "organization-seal",
                  "--subject", SEAL.format(n=n), "--csr", str(csr_path), "--out", str(pem)],
                 env=env)
    assert issued.returncode == 0, issued.stdout + issued.stderr
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    der = folder / f"leaf{n}.der"
    der.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    p12 = folder / f"leaf{n}.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        b"signer", key, cert, chain,
        serialization.BestAvailableEncryption(PASSWORD.encode())))
    return Leaf(format(cert.serial_number, "x"), pem, der, p12)


def _serve(folder: Path, env: dict[str, str], port: int) -> subprocess.Popen | None:
    """`tincay serve` with one gevent worker, once that worker is ready; None if the port was
    taken meanwhile (the server refuses a port in use, and says so)."""
    log_path = folder / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen([TINCAY, "serve", "--port", str(port), "--workers", "1",
                                   "--no-maintenance"],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while server.poll() is None and time.monotonic() < deadline:
        if "Worker ready" in log_path.read_text():
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
            return server
        time.sleep(0.1)
    if server.poll() is None:
        server.terminate()
        server.wait(timeout=30)
    if "cannot serve on" in log_path.read_text():
        return None
    raise AssertionError(log_path.read_text())


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`tincay demo` and `tincay serve` until the session ends, then two leaves, the second
    revoked by `tincay revoke` (the live status read answers for it at once).

    TINCAY_TEST_CLIENTS_PORT picks the port; by default any free one, and another one (with a
    new demo: the certificates name the port) if something took it before the server did."""
    fixed = int(os.environ.get("TINCAY_TEST_CLIENTS_PORT") or 0)
    server = None
    for _ in range(1 if fixed else 3):
        folder = tmp_path_factory.mktemp("clients")
        port = fixed or _free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TINCAY_", "SOFTHSM2_CONF"))}
        env["TINCAY_HOME"] = str(folder / "home")
        env["HOME"] = str(folder / "user")  # where gunicorn would put its control socket
        env["TINCAY_PUBLIC_URL"] = url = f"http://127.0.0.1:{port}"
        demo = run([TINCAY, "demo"], env=env)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        server = _serve(folder, env, port)
        if server is not None:
            break
    assert server is not None, f"port {port} was taken by something else"
    try:
        public = folder / "home" / "public"
        chain = [x509.load_pem_x509_certificate((public / f"{name}.pem").read_bytes())
                 for name in ("issuing-ca", "root-ca")]
        for cert, name in zip(chain, ("issuing-ca", "root-ca")):
            (folder / f"{name}.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
        good, revoked = _leaf(1, folder, env, chain), _leaf(2, folder, env, chain)
        done = run([TINCAY, "revoke", revoked.serial, "--ca", "issuing-ca", "--reason",
                    "keyCompromise"], env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        yield Served(url, folder / "home", env, public / "root-ca.pem", folder / "root-ca.der",
                     public / "issuing-ca.pem", folder / "issuing-ca.der", good, revoked)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="session")
def java_classpath(tmp_path_factory: pytest.TempPathFactory) -> str:
    """tests/clients/java/*.java compiled once (one javac run), against Debian's Bouncy Castle
    jars; the classpath to run them with."""
    missing = [str(jar) for jar in BOUNCY_CASTLE if not jar.is_file()]
    assert not missing, (f"{missing} missing: run `make test-deps` (.ci/system-deps --test "
                         "installs libbcprov-java, libbcpkix-java, libbcutil-java)")
    out = tmp_path_factory.mktemp("java")
    classpath = os.pathsep.join(str(jar) for jar in BOUNCY_CASTLE)
    compiled = run([tool("javac"), "-encoding", "UTF-8", "-cp", classpath, "-d", str(out),
                    *map(str, sorted((HERE / "java").glob("*.java")))])
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    return os.pathsep.join([str(out), classpath])


@pytest.fixture(scope="session")
def go_ocspcheck(tmp_path_factory: pytest.TempPathFactory) -> str:
    """tests/clients/go/ocspcheck built once, offline, GOPATH-style against Debian's
    golang.org/x/crypto (golang-golang-x-crypto-dev)."""
    gopath = Path("/usr/share/gocode")
    assert (gopath / "src/golang.org/x/crypto/ocsp").is_dir(), \
        "golang.org/x/crypto/ocsp missing: run `make test-deps` (golang-golang-x-crypto-dev)"
    out = tmp_path_factory.mktemp("go")
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(gopath), "GOFLAGS": "",
           "GOCACHE": str(out / "cache"),
           # without a C compiler, pure Go (slower: the standard library is rebuilt)
           "CGO_ENABLED": "1" if shutil.which("gcc") else "0"}
    built = run([tool("go"), "build", "-o", str(out / "ocspcheck"),
                 str(HERE / "go/ocspcheck/main.go")], env=env)
    assert built.returncode == 0, built.stdout + built.stderr
    return str(out / "ocspcheck")
