"""Key backends against a real SoftHSM token and in memory."""
from __future__ import annotations

import json
import multiprocessing
import os
import secrets
import subprocess
import sys
import threading

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pkcs11 import Attribute, ObjectClass

from ca.errors import (ConfigurationError, KeyBackendError, KeyExistsError, KeyNotFoundError,
                       UnsupportedKeyError)
from ca import signing
from ca.keys.base import KeySpec
from ca.keys.uri import Pkcs11Uri
from ca.settings import PinSource

SPECS = ["rsa-2048", "ec-p256", "ec-p384", "ed25519"]


def verify(public, signature: bytes, data: bytes, pad=None) -> None:
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, data, pad or padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    else:
        public.verify(signature, data)


def sign(private, data: bytes, pad=None) -> bytes:
    if isinstance(private, rsa.RSAPrivateKey):
        return private.sign(data, pad or padding.PKCS1v15(), hashes.SHA256())
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return private.sign(data, ec.ECDSA(hashes.SHA256()))
    return private.sign(data)


@pytest.mark.parametrize("text,expected", [
    ("rsa-2048", KeySpec("rsa", size=2048)), ("RSA3072", KeySpec("rsa", size=3072)),
    ("ec-p256", KeySpec("ec", curve="P-256")), ("ecdsa-secp384r1", KeySpec("ec", curve="P-384")),
    ("ed25519", KeySpec("ed25519")),
])
def test_key_spec_parses_and_prints_canonically(text: str, expected: KeySpec) -> None:
    assert KeySpec.parse(text) == expected
    assert KeySpec.parse(str(expected)) == expected


@pytest.mark.parametrize("text", ["rsa-1024", "rsa-abc", "ec-p521", "dsa-2048", ""])
def test_key_spec_rejects_unsupported(text: str) -> None:
    with pytest.raises(UnsupportedKeyError):
        KeySpec.parse(text)


def test_pkcs11_uri_round_trip_and_pin_refused() -> None:
    uri = Pkcs11Uri.parse("pkcs11:token=my%20ca;object=issuing-ca;type=private")
    assert (uri.token, uri.object, uri.type) == ("my ca", "issuing-ca", "private")
    assert Pkcs11Uri.parse(str(uri)) == uri
    with pytest.raises(ConfigurationError, match="PIN"):
        Pkcs11Uri.parse("pkcs11:token=ca;object=k?pin-value=1234")
    with pytest.raises(ConfigurationError, match="unknown attribute"):
        Pkcs11Uri.parse("pkcs11:token=ca;bogus=1")


def test_pin_source_reads_env_then_file(tmp_path) -> None:
    assert PinSource({"TINCAY_PKCS11_PIN": "1234"}).read() == "1234"
    pin_file = tmp_path / "pin"
    pin_file.write_text("98765\n")
    assert PinSource({"TINCAY_PKCS11_PIN_FILE": str(pin_file)}).read() == "98765"
    pin_file.write_text("")
    with pytest.raises(ConfigurationError, match="empty"):
        PinSource({"TINCAY_PKCS11_PIN_FILE": str(pin_file)}).read()
    with pytest.raises(ConfigurationError, match="cannot read"):
        PinSource({"TINCAY_PKCS11_PIN_FILE": str(tmp_path / "missing")}).read()
    assert "1234" not in repr(PinSource({"TINCAY_PKCS11_PIN": "1234"}))


@pytest.mark.parametrize("spec", SPECS)
def test_memory_keys_sign(memory_backend, spec: str) -> None:
    key = memory_backend.generate("k", KeySpec.parse(spec))
    assert key.spec == KeySpec.parse(spec)
    verify(key.public_key, sign(key.private_key, b"data"), b"data")
    assert memory_backend.load(key.uri) is key
    with pytest.raises(KeyExistsError):
        memory_backend.generate("k", KeySpec.parse(spec))
    with pytest.raises(KeyNotFoundError):
        memory_backend.load("memory:other")


@pytest.mark.softhsm
@pytest.mark.parametrize("spec", SPECS)
def test_hsm_generates_non_extractable_keys_that_sign(hsm_backend, unique_label, spec: str) -> None:
    key = hsm_backend.generate(unique_label, KeySpec.parse(spec))
    assert key.uri == f"pkcs11:token={hsm_backend.token_label};object={unique_label}"
    assert key.spec == KeySpec.parse(spec)
    verify(key.public_key, sign(key.private_key, b"payload"), b"payload")
    with pytest.raises(InvalidSignature):
        verify(key.public_key, sign(key.private_key, b"payload"), b"other")

    def attributes(session):
        obj = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=unique_label)
        return (obj[Attribute.SENSITIVE], obj[Attribute.EXTRACTABLE],
                obj[Attribute.NEVER_EXTRACTABLE], obj[Attribute.TOKEN])
    assert hsm_backend._session.run(attributes) == (True, False, True, True)
    with pytest.raises(KeyBackendError, match="non-extractable"):
        key.private_key.private_bytes(None, None, None)


@pytest.mark.softhsm
def test_hsm_destroys_a_retired_key_and_knows_it_is_gone(hsm_backend, unique_label) -> None:
    """What retiring a renewed service unit's old key does on the token."""
    key = hsm_backend.generate(unique_label, KeySpec.parse("ec-p256"))
    signing.sign(key, b"still here")  # its handle is cached in the session
    assert hsm_backend.destroy(key.uri) is True
    assert not hsm_backend.exists(unique_label)
    with pytest.raises(KeyNotFoundError):
        hsm_backend.load(key.uri)
    assert hsm_backend.destroy(key.uri) is False
    other = hsm_backend.generate(f"{unique_label}-2", KeySpec.parse("ec-p256"))
    signing.sign(other, b"the session still works")  # not taken for a lost token


def test_hsm_rsa_pss_signature_verifies(hsm_backend, unique_label) -> None:
    key = hsm_backend.generate(unique_label, KeySpec.parse("rsa-2048"))
    pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
    signature = key.private_key.sign(b"m", pss, hashes.SHA256())
    key.public_key.verify(signature, b"m", pss, hashes.SHA256())


@pytest.mark.softhsm
def test_hsm_signing_follows_the_key_when_it_is_replaced(hsm_backend, unique_label) -> None:
    """Key handles are remembered per session (finding a key by label costs more than a
    signature on SoftHSM); a destroyed key must not be signed with, a re-created one must."""
    from pkcs11 import Attribute

    key = hsm_backend.generate(unique_label, KeySpec.parse("ec-p256"))
    verify(key.public_key, sign(key.private_key, b"m"), b"m")  # the handle is now remembered

    def destroy(session) -> None:
        for obj in list(session.get_objects({Attribute.LABEL: unique_label})):
            obj.destroy()

    hsm_backend._session.run(destroy)
    with pytest.raises(KeyNotFoundError, match="vanished"):
        sign(key.private_key, b"m")
    replaced = hsm_backend.generate(unique_label, KeySpec.parse("ec-p256"))
    verify(replaced.public_key, sign(key.private_key, b"m"), b"m")


@pytest.mark.softhsm
def test_hsm_key_found_again_by_uri_in_new_backend(hsm_backend, softhsm_env, unique_label) -> None:
    from ca.keys.pkcs11 import Pkcs11Backend
    created = hsm_backend.generate(unique_label, KeySpec.parse("ec-p256"))
    other = Pkcs11Backend(softhsm_env["TINCAY_PKCS11_MODULE"], softhsm_env["TINCAY_PKCS11_TOKEN"],
                          PinSource(softhsm_env))
    found = other.load(created.uri)
    assert found.public_key == created.public_key
    assert other.exists(unique_label) and not other.exists(unique_label + "-x")
    with pytest.raises(KeyExistsError):
        other.generate(unique_label, KeySpec.parse("ec-p256"))
    with pytest.raises(KeyNotFoundError):
        other.load(unique_label + "-missing")
    with pytest.raises(KeyNotFoundError, match="not 'tincay-test'"):
        other.load(f"pkcs11:token=elsewhere;object={unique_label}")


@pytest.mark.softhsm
def test_hsm_signs_from_many_threads_without_crashing(hsm_backend, unique_label) -> None:
    """SoftHSM runs without mutexes under python-pkcs11: the one-session-one-lock rule holds."""
    ec_key = hsm_backend.generate(unique_label, KeySpec.parse("ec-p256"))
    rsa_key = hsm_backend.generate(unique_label + "-r", KeySpec.parse("rsa-2048"))
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(40):
                key = ec_key if (n + i) % 2 else rsa_key
                data = f"{n}-{i}".encode()
                verify(key.public_key, sign(key.private_key, data), data)
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def _sign_in_child(uri: str, queue) -> None:
    from ca.keys.pkcs11 import Pkcs11Backend
    env = os.environ
    backend = Pkcs11Backend(env["TINCAY_PKCS11_MODULE"], env["TINCAY_PKCS11_TOKEN"], PinSource(env))
    key = backend.load(uri)
    queue.put(key.private_key.sign(b"child", ec.ECDSA(hashes.SHA256())))


@pytest.mark.softhsm
def test_hsm_key_usable_after_fork(hsm_backend, unique_label) -> None:
    """gunicorn forks workers after the parent may have used the token."""
    key = hsm_backend.generate(unique_label, KeySpec.parse("ec-p256"))
    key.private_key.sign(b"parent", ec.ECDSA(hashes.SHA256()))
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_sign_in_child, args=(key.uri, queue))
    child.start()
    signature = queue.get(timeout=30)
    child.join(30)
    assert child.exitcode == 0
    key.public_key.verify(signature, b"child", ec.ECDSA(hashes.SHA256()))
    key.private_key.sign(b"parent-again", ec.ECDSA(hashes.SHA256()))


def _boot_workers(uri: str, boots: int, queue) -> None:
    """Like a gunicorn master: fork ``boots`` workers one after another, each opening the
    token and signing once; report how many failed."""
    failures = 0
    for _ in range(boots):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                from ca.keys.pkcs11 import Pkcs11Backend
                env = os.environ
                backend = Pkcs11Backend(env["TINCAY_PKCS11_MODULE"], env["TINCAY_PKCS11_TOKEN"],
                                        PinSource(env))
                backend.load(uri).private_key.sign(b"boot", ec.ECDSA(hashes.SHA256()))
                code = 0
            finally:
                os._exit(code)
        failures += os.waitpid(pid, 0)[1] != 0
    queue.put(failures)


@pytest.mark.softhsm
def test_hsm_processes_opening_the_token_at_once_all_succeed(hsm_backend, unique_label) -> None:
    """SoftHSM rewrites its token file at every login; another process reading it meanwhile
    finds no token (softhsm/SoftHSMv2#757). Without the machine-wide lock most rounds here
    failed a worker; with it none may."""
    key = hsm_backend.generate(unique_label, KeySpec.parse("ec-p256"))
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    masters = [ctx.Process(target=_boot_workers, args=(key.uri, 12, queue)) for _ in range(4)]
    for master in masters:
        master.start()
    failures = [queue.get(timeout=120) for _ in masters]
    for master in masters:
        master.join(30)
    assert failures == [0, 0, 0, 0]


@pytest.mark.softhsm
@pytest.mark.parametrize("override,expected", [
    ({"TINCAY_PKCS11_PIN": "000000"}, "PinError: wrong PIN"),
    ({"TINCAY_PKCS11_TOKEN": "no-such-token"}, "TokenNotFoundError: no PKCS#11 token labelled"),
])
def test_hsm_login_failures_are_clear(softhsm_env, override, expected) -> None:
    """Login state is per process in PKCS#11, so each failure is checked in a fresh process."""
    code = ("import os, sys\n"
            "from ca.keys.pkcs11 import Pkcs11Backend\nfrom ca.settings import PinSource\n"
            "from ca.errors import TincayError\n"
            "e = os.environ\n"
            "try:\n"
            "    Pkcs11Backend(e['TINCAY_PKCS11_MODULE'], e['TINCAY_PKCS11_TOKEN'], PinSource(e))"
            ".load('x')\n"
            "except TincayError as exc:\n"
            "    print(type(exc).__name__ + ': ' + str(exc)); sys.exit(3)\n")
    env = {**os.environ, **softhsm_env, **override}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 3, result.stderr
    assert result.stdout.startswith(expected)
    assert "000000" not in result.stdout + result.stderr


_SCRIPT = """
import json, os, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from ca.errors import KeyBackendError
from ca import signing
from ca.keys.base import KeySpec
from ca.keys.pkcs11 import Pkcs11Backend
from ca.settings import PinSource

e = os.environ
backend = Pkcs11Backend(e["TINCAY_PKCS11_MODULE"], e["TINCAY_PKCS11_TOKEN"], PinSource(e))

def sign(key):
    try:
        signature = key.private_key.sign(b"record", ec.ECDSA(hashes.SHA256()))
    except KeyBackendError as exc:
        return f"{type(exc).__name__}: {exc}"
    key.public_key.verify(signature, b"record", ec.ECDSA(hashes.SHA256()))
    return "signed"
"""  # what the scripts below, each run in a process of its own, start with

_OUTAGE = _SCRIPT + """
tokens = sys.argv[1]
key = backend.generate("outage", KeySpec.parse("ec-p256"))
seen = [sign(key)]
os.rename(tokens, tokens + ".away")
seen += [sign(key) for _ in range(3)]
os.rename(tokens + ".away", tokens)
seen += [sign(key) for _ in range(2)]
print(json.dumps(seen))
"""


def _private_token(softhsm_env: dict[str, str], tmp_path) -> tuple[dict[str, str], str]:
    """A SoftHSM token of its own (for processes that move its storage away), and where its
    storage is: the environment for a subprocess and the token directory."""
    from ca.keys import softhsm

    conf = softhsm.write_config(tmp_path)
    pin = secrets.token_hex(8)
    softhsm.init_token(conf, "outage", pin, secrets.token_hex(8))
    env = {**os.environ, **softhsm_env, "SOFTHSM2_CONF": str(conf),
           "TINCAY_PKCS11_TOKEN": "outage", "TINCAY_PKCS11_PIN": pin}
    tokens = next(line.split("=", 1)[1].strip() for line in conf.read_text().splitlines()
                  if line.startswith("directories.tokendir"))
    return env, tokens


def _run_script(script: str, env: dict[str, str], *args: str) -> list:
    result = subprocess.run([sys.executable, "-c", script, *args], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.softhsm
def test_hsm_signing_resumes_after_the_token_was_gone(softhsm_env, tmp_path) -> None:
    """A token that stops answering under a running process (its storage moved away here, a
    network HSM's link elsewhere): each signature meanwhile fails with a KeyBackendError, never
    a raw PKCS#11 error, and signing resumes once the token is back, in the same process.
    SoftHSM sees the token again only after its module is re-initialised: without that, every
    signature after the outage failed with "vanished from the token" until a restart."""
    env, tokens = _private_token(softhsm_env, tmp_path)
    seen = _run_script(_OUTAGE, env, tokens)
    assert seen[0] == "signed" and seen[-2:] == ["signed", "signed"], seen
    assert all(outcome.split(":")[0] in ("KeyNotFoundError", "BackendUnavailableError")
               for outcome in seen[1:4]), seen


_LOAD_WHILE_GONE = _SCRIPT + """
tokens, pem = sys.argv[1], sys.argv[2]
key = backend.load("outage", expected=serialization.load_pem_public_key(pem.encode()))
seen = [sign(key)]
os.rename(tokens + ".away", tokens)
print(json.dumps(seen + [sign(key)]))
"""


@pytest.mark.softhsm
def test_hsm_key_loaded_while_the_token_is_gone_is_checked_once_it_is_back(
        softhsm_env, tmp_path) -> None:
    """A worker that starts during an HSM outage loads its key from the certificate's public
    key (ca/keys/base.py: ``expected``) instead of failing to boot, which would stop the whole
    gunicorn server: it refuses while the token is gone, and once it is back signs with the
    token's key only if that is the certificate's."""
    from cryptography.hazmat.primitives import serialization

    env, tokens = _private_token(softhsm_env, tmp_path)
    [public_pem] = _run_script(_GENERATE, env)
    stranger = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    for expected, afterwards in ((public_pem, "signed"), (stranger, "is not the key of the")):
        os.rename(tokens, tokens + ".away")
        during, after = _run_script(_LOAD_WHILE_GONE, env, tokens, expected)
        assert "cannot be initialised" in during
        assert afterwards in after


_GENERATE = _SCRIPT + """
key = backend.generate("outage", KeySpec.parse("ec-p256"))
print(json.dumps([key.public_key.public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()]))
"""


@pytest.mark.softhsm
def test_hsm_key_loaded_for_a_certificate_must_be_its_key(hsm_backend, unique_label) -> None:
    """With the token reachable, ``expected`` is checked at once: a service never starts
    signing for a certificate with another key."""
    key = hsm_backend.generate(unique_label, KeySpec.parse("ec-p256"))
    assert hsm_backend.load(key.uri, expected=key.public_key).public_key == key.public_key
    stranger = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(KeyBackendError, match="is not the key of the certificate"):
        hsm_backend.load(key.uri, expected=stranger)
