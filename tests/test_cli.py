"""The ``tincay`` CLI end to end: SoftHSM keys, SQLite and PostgreSQL, OpenSSL as the judge.

Most commands run in-process through cli.main.main (the console script's function) so the
suite stays fast; the ones about process-wide state (a wrong PIN, the demo's own token) run the
installed console script in a subprocess.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from cryptography import x509

from cli.main import main
from tests import helpers_x509 as hx

pytestmark = pytest.mark.softhsm
ROOT = Path(__file__).resolve().parent.parent
TINCAY = shutil.which("tincay", path=str(Path(sys.executable).parent)) or "tincay"
DOCTOR = "C=VN, O=Bệnh viện Quận 11, CN=Nguyễn Văn A, UID=CCCD:079073009568"


class Cli:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str, code: int = 0) -> str:
        self.capsys.readouterr()
        result = main(list(args))
        out, err = self.capsys.readouterr()
        assert result == code, f"tincay {' '.join(args)} -> {result}\n{out}\n{err}"
        self.err = err
        return out

    def json(self, *args: str) -> object:
        return json.loads(self(*args, "--json"))


@pytest.fixture
def cli(softhsm_env: dict[str, str], database_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    monkeypatch.setenv("TINCAY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TINCAY_DATABASE_URL", database_url)
    monkeypatch.setenv("TINCAY_PUBLIC_URL", "http://127.0.0.1:8080")
    yield Cli(capsys)


def write_spec(path: Path, prefix: str) -> Path:
    """A two-CA hierarchy whose key labels are unique on the session's shared token."""
    path.write_text(yaml.safe_dump({
        "name": "cli",
        "authorities": [
            {"name": f"{prefix}-root", "profile": "root-ca", "key": "ec-p256",
             "subject": "C=VN, O=Tincay, CN=CLI Root"},
            {"name": f"{prefix}-ca", "parent": f"{prefix}-root", "profile": "issuing-ca",
             "key": "ec-p256", "subject": "C=VN, O=Bệnh viện Quận 11, CN=CLI Issuing CA"}],
        "services": [
            {"name": f"{prefix}-ocsp", "kind": "ocsp", "issuer": f"{prefix}-ca",
             "profile": "ocsp-responder", "key": "ec-p256",
             "subject": "C=VN, O=Bệnh viện Quận 11, CN=OCSP"}],
    }, allow_unicode=True), encoding="utf-8")
    return path


def openssl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True)


def test_operator_tour(cli: Cli, tmp_path: Path, unique_label: str) -> None:
    spec = write_spec(tmp_path / "spec.yaml", unique_label)
    root, ca = f"{unique_label}-root", f"{unique_label}-ca"
    out = cli("init", "--hierarchy", str(spec))
    assert "created" in out and f"first CRL of {root}, {ca} published" in out
    assert "nothing to create" in cli("init", "--hierarchy", str(spec))

    listed = cli.json("ca", "list")
    assert [(a["name"], a["parent"], a["status"]) for a in listed] == \
        [(root, None, "active"), (ca, root, "active")]
    assert cli.json("ca", "show", ca)["key_uri"] == f"pkcs11:token=tincay-test;object={ca}"
    cli("ca", "export", root, "--out", str(tmp_path / "root.pem"))
    cli("ca", "export", ca, "--chain", "--out", str(tmp_path / "chain.pem"))
    chain = x509.load_pem_x509_certificates((tmp_path / "chain.pem").read_bytes())
    assert [c.subject.rfc4514_string() for c in chain][1] == \
        x509.load_pem_x509_certificate((tmp_path / "root.pem").read_bytes()).subject.rfc4514_string()
    hx.write_pem(tmp_path / "ca.pem", chain[0])

    # a CSR made by OpenSSL: its subject and extensions are ignored, its key is certified
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", "/CN=whatever the requester typed", "-addext", "basicConstraints=CA:TRUE",
            "-keyout", str(tmp_path / "doctor.key"), "-out", str(tmp_path / "doctor.csr"))
    out = cli("issue", "--ca", ca, "--profile", "clinician", "--subject", DOCTOR,
              "--csr", str(tmp_path / "doctor.csr"), "--email", "bs.a@benhvien-q11.example.vn",
              "--days", "180", "--out", str(tmp_path / "doctor.pem"))
    assert out.startswith("issued clinician certificate")
    verify = subprocess.run(["openssl", "verify", "-x509_strict", "-CAfile",
                             str(tmp_path / "root.pem"), "-untrusted", str(tmp_path / "ca.pem"),
                             str(tmp_path / "doctor.pem")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    doctor = x509.load_pem_x509_certificate((tmp_path / "doctor.pem").read_bytes())
    assert "Nguyễn Văn A" in doctor.subject.rfc4514_string()
    assert doctor.not_valid_after_utc - doctor.not_valid_before_utc == \
        dt.timedelta(days=180, seconds=-1)
    modulus = openssl("x509", "-in", str(tmp_path / "doctor.pem"), "-noout", "-pubkey").stdout
    assert modulus == openssl("pkey", "-in", str(tmp_path / "doctor.key"), "-pubout").stdout

    # remote-signing model: the key is generated on the HSM and stays there
    record = cli.json("issue", "--ca", ca, "--profile", "organization-seal", "--subject",
                      "C=VN, O=Sở Y tế Đà Nẵng, CN=Sở Y tế, UID=MST:0400260612, UID=MNS:1047665",
                      "--generate-key", "--key-type", "rsa-2048", "--out",
                      str(tmp_path / "seal.pem"))
    assert record["key_uri"].startswith("tincay:subscriber-key:")  # wrapped under the KEK
    assert record["status"] == "issued" and record["profile"] == "organization-seal"

    serial = openssl("x509", "-in", str(tmp_path / "doctor.pem"), "-noout",
                     "-serial").stdout.strip()  # serial=0A1B...
    shown = cli.json("cert", "show", serial)
    assert shown["subject"].startswith("C=VN, O=Bệnh viện Quận 11")
    colons = ":".join(serial.split("=")[1][i:i + 2] for i in range(0, len(serial) - 7, 2))
    assert cli.json("cert", "show", colons.lower(), "--ca", ca)["serial"] == shown["serial"]
    cli("cert", "export", serial, "--format", "der", "--out", str(tmp_path / "doctor.der"))
    assert x509.load_der_x509_certificate((tmp_path / "doctor.der").read_bytes()) == doctor
    rows = cli.json("cert", "list", "--ca", ca)
    assert {r["profile"] for r in rows} == {"clinician", "organization-seal", "ocsp-responder"}
    assert len(cli.json("cert", "list", "--profile", "clinician", "--subject", "Văn A")) == 1
    assert "Nguyễn Văn A" in cli("cert", "list")  # the human table

    # revocation by the serial as OpenSSL prints it; hold and release
    assert "revoked" in cli("revoke", serial, "--ca", ca, "--reason", "key-compromise",
                            "--invalidity-date", "2026-01-02")
    revoked = cli.json("cert", "list", "--status", "revoked")
    assert [(r["serial"], r["revocation_reason"]) for r in revoked] == \
        [(shown["serial"], "keyCompromise")]
    cli("revoke", serial, "--ca", ca, "--reason", "superseded", code=1)
    assert "already revoked" in cli.err
    cli("revoke", record["serial"], "--ca", ca, "--reason", "certificateHold")
    cli("release", record["serial"], "--ca", ca)
    assert cli.json("cert", "show", record["serial"])["status"] == "issued"
    cli("revoke", record["serial"], "--ca", ca, "--reason", "nonsense", code=1)
    assert "not one of" in cli.err
    cli("revoke", record["serial"], "--ca", ca, "--reason", "superseded", "--invalidity-date",
        "yesterday", code=2)

    # the CRL lists the revoked doctor, and OpenSSL agrees
    published = cli.json("crl", "--ca", ca, "--out", str(tmp_path / "ca.crl"),
                         "--validity", "24h")
    assert (published["number"], published["entries"]) == (2, 1)  # init published #1
    verify = subprocess.run(["openssl", "verify", "-crl_check", "-CRLfile",
                             str(tmp_path / "ca.crl"), "-CAfile", str(tmp_path / "root.pem"),
                             "-untrusted", str(tmp_path / "ca.pem"), str(tmp_path / "doctor.pem")],
                            capture_output=True, text=True)
    assert verify.returncode == 2 and "certificate revoked" in verify.stdout + verify.stderr

    # delta CRLs: off until configured, then over the latest complete CRL
    cli("crl", "--ca", ca, "--delta", code=1)
    assert "does not publish delta CRLs" in cli.err
    cli("ca", "configure", ca, "--delta-crl-validity", "1x", code=2)
    assert "not a duration" in cli.err
    cli("ca", "configure", ca, "--delta-crl-validity", "8d", code=1)
    assert "shorter than crl_validity 7d" in cli.err
    configured = cli.json("ca", "configure", ca, "--delta-crl-validity", "6h",
                          "--ocsp-validity", "4h")
    assert (configured["crl_validity"], configured["delta_crl_validity"],
            configured["ocsp_validity"]) == ("7d", "6h", "4h")
    delta = cli.json("crl", "--ca", ca, "--delta", "--out", str(tmp_path / "delta.crl"))
    assert (delta["number"], delta["delta_base"]) == (3, 2)
    text = openssl("crl", "-inform", "DER", "-in", str(tmp_path / "delta.crl"), "-noout",
                   "-text").stdout
    assert "Delta CRL Indicator: critical" in text
    assert cli.json("ca", "configure", ca, "--delta-crl-validity", "off")[
        "delta_crl_validity"] is None

    # one maintenance pass: the root's first CRL (from init) and the issuing CA's (made after
    # its revocations, then deltas switched off) are fresh; nothing is due
    assert cli.json("maintain", "--once")["crls"] == []

    events = cli.json("audit", "--ca", ca)
    assert {"key.generate", "certificate.prepare", "certificate.issue", "certificate.revoke",
            "certificate.release", "authority.configure", "crl.publish"} <= \
        {e["action"] for e in events}


def test_profile_commands(cli: Cli, tmp_path: Path) -> None:
    names = [p["name"] for p in cli.json("profiles", "list")]
    assert {"clinician", "organization-seal-qualified", "tls-server"} <= set(names)
    assert "person-base" not in names  # abstract
    shown = yaml.safe_load(cli("profiles", "show", "clinician"))
    assert shown["extends"] == "person-base" and shown["key_usage"] == ["nonRepudiation"]
    good = tmp_path / "nurse.yaml"
    good.write_text("name: nurse\nextends: clinician\ndescription: Nurses.\n", encoding="utf-8")
    assert "valid" in cli("profiles", "check", str(good))
    bad = tmp_path / "midwife.yaml"
    bad.write_text("name: midwife\nextends: clinician\nkey_usgae: [digitalSignature]\n",
                   encoding="utf-8")
    cli("profiles", "check", str(bad), code=1)
    assert str(bad) in cli.err and "key_usgae" in cli.err and "key_usage" in cli.err
    assert cli.err.count("\n") == 1 and "Traceback" not in cli.err


def test_operator_errors_are_one_line(cli: Cli, tmp_path: Path, unique_label: str) -> None:
    spec = write_spec(tmp_path / "spec.yaml", unique_label)
    cli("init", "--hierarchy", str(spec))
    ca = f"{unique_label}-ca"
    garbage = tmp_path / "garbage.csr"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                        b"-----END CERTIFICATE REQUEST-----\n")
    cases = [
        (["issue", "--ca", ca, "--profile", "clinician", "--subject", DOCTOR, "--csr",
          str(garbage), "--out", str(tmp_path / "x.pem")], 1, str(garbage)),
        (["issue", "--ca", ca, "--profile", "clinician", "--subject", "CN=A, C=VN",
          "--generate-key", "--out", str(tmp_path / "x.pem")], 1, "is required"),
        (["issue", "--ca", ca, "--profile", "clinician", "--subject", DOCTOR,
          "--generate-key", "--key-type", "ed25519", "--out", str(tmp_path / "x.pem")], 1,
         "does not allow ed25519"),
        (["issue", "--ca", "nope", "--profile", "clinician", "--subject", DOCTOR,
          "--generate-key", "--out", str(tmp_path / "x.pem")], 1, "no CA named 'nope'"),
        (["issue", "--ca", ca, "--profile", "clinican", "--subject", DOCTOR,
          "--generate-key", "--out", str(tmp_path / "x.pem")], 1, "clinician"),
        (["issue", "--ca", ca, "--profile", "clinician", "--subject", DOCTOR,
          "--out", str(tmp_path / "x.pem")], 2, "exactly one of"),
        (["ca", "list", "--pin", "1234"], 2, "No such option"),
        (["cert", "show", "zz"], 1, "not a hexadecimal serial"),
        (["init", "--hierarchy", str(tmp_path / "missing.yaml")], 2, "does not exist"),
        # an output that cannot be written is refused before a key or a certificate is made
        (["issue", "--ca", ca, "--profile", "clinician", "--subject", DOCTOR,
          "--generate-key", "--out", str(tmp_path / "no-such-dir" / "x.pem")], 1,
         f"cannot write {tmp_path / 'no-such-dir' / 'x.pem'}: no directory"),
        (["issue", "--ca", ca, "--profile", "clinician", "--subject", DOCTOR,
          "--generate-key", "--out", str(tmp_path)], 1, "it is a directory"),
    ]
    keys_before = [e for e in cli.json("audit", "--ca", ca) if e["action"] == "key.generate"]
    for args, code, message in cases:
        cli(*args, code=code)
        assert message in cli.err, (args, cli.err)
        assert "Traceback" not in cli.err
        if code == 1:
            assert cli.err.startswith("tincay: error: ") and cli.err.count("\n") == 1
    assert not (tmp_path / "x.pem").exists()
    assert cli.json("cert", "list", "--ca", ca, "--profile", "clinician") == []
    assert [e for e in cli.json("audit", "--ca", ca) if e["action"] == "key.generate"] == \
        keys_before  # no HSM key was generated for any of them


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TINCAY, *args], capture_output=True, text=True, env=env, timeout=120)


def test_wrong_pin_and_missing_token_in_a_fresh_process(
        softhsm_env: dict[str, str], tmp_path: Path, unique_label: str) -> None:
    env = {**os.environ, **softhsm_env, "TINCAY_HOME": str(tmp_path / "home"),
           "TINCAY_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"}
    spec = str(write_spec(tmp_path / "spec.yaml", unique_label))
    wrong = _run({**env, "TINCAY_PKCS11_PIN": "not-the-pin"}, "init", "--hierarchy", spec)
    assert wrong.returncode == 1, wrong.stderr
    assert wrong.stderr.splitlines()[-1] == \
        "tincay: error: wrong PIN for PKCS#11 token 'tincay-test'"
    assert "Traceback" not in wrong.stderr
    assert "not-the-pin" not in wrong.stderr + wrong.stdout
    missing = _run({**env, "TINCAY_PKCS11_TOKEN": "no-such-token"}, "init", "--hierarchy", spec)
    assert missing.returncode == 1 and "no PKCS#11 token labelled 'no-such-token'" in missing.stderr
    # refused before a word about generating keys, and before a database is written
    assert "generating" not in wrong.stderr + missing.stderr
    assert not (tmp_path / "db.sqlite").exists()
    no_pin = {k: v for k, v in env.items() if k != "TINCAY_PKCS11_PIN"}
    unset = _run(no_pin, "init", "--hierarchy", spec)
    assert unset.returncode == 1 and "TINCAY_PKCS11_PIN" in unset.stderr
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm_env["TINCAY_PKCS11_PIN"] + "\n", encoding="utf-8")
    ok = _run({**no_pin, "TINCAY_PKCS11_PIN_FILE": str(pin_file)}, "init", "--hierarchy", spec)
    assert ok.returncode == 0, ok.stderr


def test_demo_makes_its_own_token_and_is_idempotent(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TINCAY_", "SOFTHSM2_CONF"))}
    env["TINCAY_HOME"] = str(tmp_path / "demo")
    first = _run(env, "demo")
    assert first.returncode == 0, first.stderr
    assert "created root-ca, issuing-ca, ocsp-issuing-ca, tsa" in first.stdout
    pin_file = tmp_path / "demo" / "pkcs11-pin"
    assert oct(pin_file.stat().st_mode & 0o777) == "0o600"
    assert pin_file.read_text().strip() not in first.stdout + first.stderr
    root, issuing = tmp_path / "demo/public/root-ca.pem", tmp_path / "demo/public/issuing-ca.pem"
    result = hx.openssl_verify(issuing, root)
    assert result.returncode == 0, result.stderr
    again = _run(env, "demo")
    assert again.returncode == 0 and "nothing to create" in again.stdout

    # a copied home keeps its keys beside its database, not in the original's token
    shutil.copytree(tmp_path / "demo", tmp_path / "copy", symlinks=True)

    def objects(home: str) -> int:
        return len(list((tmp_path / home / "softhsm" / "tokens").rglob("*.object")))

    before = objects("demo"), objects("copy")
    issued = _run({**env, "TINCAY_HOME": str(tmp_path / "copy")}, "issue", "--ca", "issuing-ca",
                  "--profile", "citizen", "--subject", "C=VN, CN=Bản Sao, UID=CCCD:079073009568",
                  "--generate-key", "--out", str(tmp_path / "copy" / "citizen.pem"))
    assert issued.returncode == 0, issued.stderr
    assert objects("demo") == before[0] and objects("copy") > before[1]
    assert str(tmp_path / "copy") in (tmp_path / "copy/softhsm/softhsm2.conf").read_text()


def test_tsa_log(cli: Cli, tmp_path: Path) -> None:
    """`tincay tsa log` reads what the TSA recorded (written here through the service)."""
    from ca.timestamps import TimestampRecord
    from cli.context import AppContext

    app = AppContext(create_database=True)
    at = dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.timezone.utc)
    for serial in (0xA1B2C3D4E5F60718, 0xB1B2C3D4E5F60718):
        app.service.token_log.record(TimestampRecord("tsa", serial, at, "sha256", b"\x01" * 32,
                                                     "1.3.6.1.4.1.59999.3.1", nonce=7,
                                                     requester="127.0.0.1"))
    app.close()
    rows = cli.json("tsa", "log")
    assert [r["serial"] for r in rows] == ["b1b2c3d4e5f60718", "a1b2c3d4e5f60718"]
    assert rows[0]["imprint"] == "01" * 32 and rows[0]["requester"] == "127.0.0.1"
    assert [r["serial"] for r in cli.json("tsa", "log", "--serial", "A1:B2:C3:D4:E5:F6:07:18")] \
        == ["a1b2c3d4e5f60718"]
    assert cli.json("tsa", "log", "--since", "2026-11-25") == []
    assert "a1b2c3d4e5f60718" in cli("tsa", "log")


def test_commands_other_than_init_refuse_a_missing_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Run outside the CA's TINCAY_HOME, a command says where it looked and what to run,
    instead of creating an empty database and printing "(none)" with exit 0."""
    home = tmp_path / "elsewhere"
    monkeypatch.setenv("TINCAY_HOME", str(home))
    monkeypatch.delenv("TINCAY_DATABASE_URL", raising=False)
    for args in (["ca", "list"], ["cert", "show", "01"], ["audit"], ["tsa", "log"],
                 ["revoke", "01", "--ca", "x", "--reason", "superseded"],
                 ["maintain", "--once"]):
        assert main(args) == 1, args
        err = capsys.readouterr().err
        assert err.startswith(f"tincay: error: no tincay database at {home / 'tincay.db'}: "
                              "create one with tincay init"), err
        assert err.count("\n") == 1
    assert not (home / "tincay.db").exists()


def test_serve_on_a_taken_port_says_so_before_claiming_to_serve(
        cli: Cli, tmp_path: Path, unique_label: str) -> None:
    import socket

    cli("init", "--hierarchy", str(write_spec(tmp_path / "spec.yaml", unique_label)))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        cli("serve", "--port", str(port), code=1)
    assert cli.err.startswith(f"tincay: error: cannot serve on 127.0.0.1:{port}: "), cli.err
    assert "serving on" not in cli.err and cli.err.count("\n") == 1


def test_serve_refuses_a_bad_service_variable_before_serving(
        cli: Cli, tmp_path: Path, unique_label: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers read TINCAY_SAD_LIFETIME and TINCAY_KEY_CACHE; `tincay serve` checks them
    first, so a typo is one line naming the variable, not a worker that fails at a request."""
    cli("init", "--hierarchy", str(write_spec(tmp_path / "spec.yaml", unique_label)))
    for name, value in (("TINCAY_SAD_LIFETIME", "-5m"), ("TINCAY_KEY_CACHE", "0")):
        with monkeypatch.context() as patch:
            patch.setenv(name, value)
            cli("serve", "--port", "1", code=1)
        assert cli.err.startswith(f"tincay: error: {name}: "), cli.err
        assert "serving on" not in cli.err and cli.err.count("\n") == 1


def test_a_ca_near_the_end_of_its_certificate_is_a_warning(
        cli: Cli, tmp_path: Path, unique_label: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write_spec(tmp_path / "spec.yaml", unique_label)
    data = yaml.safe_load(spec.read_text(encoding="utf-8"))
    data["authorities"][1]["validity_days"] = 100  # within the default 180 days
    spec.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    root, ca = f"{unique_label}-root", f"{unique_label}-ca"
    cli("init", "--hierarchy", str(spec))
    cli("ca", "list")
    assert cli.err.startswith(f"tincay: warning: CA {ca} expires in 99 days (") and \
        cli.err.rstrip().endswith("plan its renewal") and root not in cli.err
    report = cli.json("maintain", "--once")
    assert [w.split(" (")[0] for w in report["warnings"]] == [f"CA {ca} expires in 99 days"]
    monkeypatch.setenv("TINCAY_CA_EXPIRY_WARNING", "30d")
    cli("ca", "list")
    assert cli.err == ""
    monkeypatch.setenv("TINCAY_CA_EXPIRY_WARNING", "soon")
    cli("ca", "list", code=1)
    assert cli.err.startswith("tincay: error: TINCAY_CA_EXPIRY_WARNING: 'soon' is not a duration")


def test_maintain_renews_service_units_when_due(
        cli: Cli, tmp_path: Path, unique_label: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """tincay maintain (and so tincay serve) renews a unit at TINCAY_UNIT_RENEWAL of its
    certificate's validity: a new key on the HSM and a new certificate, audited."""
    import time

    spec = write_spec(tmp_path / "spec.yaml", unique_label)
    data = yaml.safe_load(spec.read_text(encoding="utf-8"))
    data["services"][0]["validity_days"] = 1
    spec.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    unit = f"{unique_label}-ocsp"
    cli("init", "--hierarchy", str(spec))
    assert cli.json("maintain", "--once")["renewed"] == []  # 2/3 of a day: not yet
    monkeypatch.setenv("TINCAY_UNIT_RENEWAL", "0.00001")  # under a second of a day
    time.sleep(1.1)
    assert cli.json("maintain", "--once")["renewed"] == [unit]
    events = [e for e in cli.json("audit", "--ca", f"{unique_label}-ca")
              if e["action"] in ("service.renew", "key.generate")]
    renew = next(e for e in events if e["action"] == "service.renew")
    assert renew["details"]["unit"] == unit
    assert renew["details"]["key_uri"].startswith(f"pkcs11:token=tincay-test;object={unit}.")
    monkeypatch.setenv("TINCAY_UNIT_RENEWAL", "150%")
    cli("maintain", "--once", code=1)
    assert cli.err.startswith("tincay: error: TINCAY_UNIT_RENEWAL: '150%' must be between")
