"""What tincay leaves on disk is for its own user only: TINCAY_HOME 0700, the SQLite database
and its -wal/-shm 0600 (subjects, the audit trail, requesters' IP addresses), the demo's PINs
under TINCAY_HOME whatever SOFTHSM2_CONF says. Real processes, the default umask 022."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.test_cli import write_spec

pytestmark = pytest.mark.softhsm
TINCAY = str(Path(sys.executable).parent / "tincay")
PORT = 56401  # this suite's own port


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def _umask_022() -> None:
    os.umask(0o022)


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TINCAY, *args], capture_output=True, text=True, env=env, timeout=180,
                          preexec_fn=_umask_022)


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TINCAY_", "SOFTHSM2_CONF"))}
    env["TINCAY_HOME"] = str(tmp_path / "home")
    env["HOME"] = str(tmp_path / "user")
    return env


def test_home_and_database_are_private_after_init_and_a_served_request(
        softhsm_env: dict[str, str], tmp_path: Path, unique_label: str) -> None:
    env = {**_clean_env(tmp_path), **softhsm_env,
           "TINCAY_PUBLIC_URL": f"http://127.0.0.1:{PORT}"}
    home = tmp_path / "home"
    spec = write_spec(tmp_path / "spec.yaml", unique_label)
    init = _run(env, "init", "--hierarchy", str(spec))
    assert init.returncode == 0, init.stderr
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen([TINCAY, "serve", "--port", str(PORT), "--workers", "1",
                               "--no-maintenance"], env=env, stdout=log,
                              stderr=subprocess.STDOUT, preexec_fn=_umask_022)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                crl = urllib.request.urlopen(
                    f"http://127.0.0.1:{PORT}/crl/{unique_label}-ca.crl", timeout=2).read()
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline and server.poll() is None, \
                    (tmp_path / "serve.log").read_text()
                time.sleep(0.2)
        assert crl  # served from the database, so the worker has it open, in WAL mode
        database = home / "tincay.db"
        files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
        assert all(f.exists() for f in files), sorted(p.name for p in home.iterdir())
        assert {f.name: mode(f) for f in files} == {f.name: "0o600" for f in files}
        assert mode(home) == "0o700"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()

    # an older install's loose files are tightened when tincay next opens them, and it says so
    os.chmod(home, 0o755)
    os.chmod(home / "tincay.db", 0o644)
    listed = _run(env, "ca", "list")
    assert listed.returncode == 0, listed.stderr
    assert mode(home) == "0o700" and mode(home / "tincay.db") == "0o600"
    assert f"{home / 'tincay.db'} was readable by other users (0644): now 0600" in listed.stderr
    assert f"{home} was readable by other users (0755): now 0700" in listed.stderr
    again = _run(env, "ca", "list")
    assert "readable by other users" not in again.stderr  # said once, when it changed


def test_demo_keeps_its_secrets_under_home_with_an_external_softhsm_conf(
        tmp_path: Path) -> None:
    """SOFTHSM2_CONF chosen by the operator, outside TINCAY_HOME: the demo's token goes where
    that config says, but its SO PIN and PIN stay under TINCAY_HOME, 0600."""
    from ca.keys import softhsm

    outside = tmp_path / "etc"
    conf = softhsm.write_config(outside)  # its token directory is outside/softhsm/tokens
    before = {p for p in outside.rglob("*")}
    env = {**_clean_env(tmp_path), "SOFTHSM2_CONF": str(conf)}
    home = tmp_path / "home"
    first = _run(env, "demo")
    assert first.returncode == 0, first.stderr
    written = {p for p in outside.rglob("*")} - before
    tokens = outside / "softhsm" / "tokens"
    assert written and all(tokens in p.parents for p in written), sorted(map(str, written))
    so_pin, pin = home / "softhsm" / "so-pin", home / "pkcs11-pin"
    assert mode(so_pin) == "0o600" and mode(pin) == "0o600"
    assert mode(home) == "0o700" and mode(home / "softhsm") == "0o700"
    assert mode(home / "public") == "0o700"
    assert mode(home / "tincay.db") == "0o600"
    for secret in (so_pin, pin):
        assert secret.read_text().strip() not in first.stdout + first.stderr
    again = _run(env, "demo")
    assert again.returncode == 0 and "nothing to create" in again.stdout, again.stderr
