"""Shared fixtures: a throwaway SoftHSM token per test session, in-memory keys, a frozen clock."""
from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

pytest_plugins = ["pytester"]

from ca.clock import FrozenClock
from ca.keys.memory import MemoryBackend
from ca.settings import PinSource, find_softhsm_module

SOFTHSM_AVAILABLE = find_softhsm_module() is not None and shutil.which("softhsm2-util") is not None


@pytest.fixture(scope="session")
def softhsm_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A fresh SoftHSM token directory and token for this test session.

    Returns the environment (SOFTHSM2_CONF, TINCAY_PKCS11_*) that product code reads; it is also
    exported into os.environ because the SoftHSM library reads SOFTHSM2_CONF when first loaded.
    """
    if not SOFTHSM_AVAILABLE:
        pytest.skip("SoftHSM 2 is not installed (apt-get install softhsm2)")
    from ca.keys import softhsm

    home = tmp_path_factory.mktemp("softhsm")
    conf = softhsm.write_config(home)
    pin, so_pin = secrets.token_hex(8), secrets.token_hex(8)
    label = "tincay-test"
    softhsm.init_token(conf, label, pin, so_pin)
    env = {"SOFTHSM2_CONF": str(conf), "TINCAY_PKCS11_MODULE": find_softhsm_module() or "",
           "TINCAY_PKCS11_TOKEN": label, "TINCAY_PKCS11_PIN": pin}
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def hsm_backend(softhsm_env: dict[str, str]):
    """The PKCS#11 backend on the session's SoftHSM token."""
    from ca.keys.pkcs11 import Pkcs11Backend

    return Pkcs11Backend(softhsm_env["TINCAY_PKCS11_MODULE"], softhsm_env["TINCAY_PKCS11_TOKEN"],
                         PinSource({"TINCAY_PKCS11_PIN": softhsm_env["TINCAY_PKCS11_PIN"]}))


@pytest.fixture
def memory_backend() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(dt.datetime(2026, 11, 24, 8, 0, 0, tzinfo=dt.timezone.utc))


@pytest.fixture
def unique_label() -> str:
    """Key labels must be unique on the shared session token."""
    return f"k-{secrets.token_hex(6)}"


# --- databases: the same tests on SQLite and PostgreSQL ---------------------------------------

POSTGRES_URL = os.environ.get("TINCAY_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh database on the test PostgreSQL server.

    PostgreSQL runs when TINCAY_TEST_POSTGRES_URL is set (``make test`` starts a throwaway
    server and sets it); elsewhere those cases skip with the reason.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tincay.db'}"
        return
    with postgres_database() as url:
        yield url


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the test PostgreSQL server, dropped afterwards (skips without one)."""
    if not POSTGRES_URL:
        pytest.skip("TINCAY_TEST_POSTGRES_URL is not set (make test starts a PostgreSQL server)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(POSTGRES_URL)
    name = f"tincay_{secrets.token_hex(6)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def connections_refused(database_url: str) -> Iterator[None]:
    """PostgreSQL drops every connection to ``database_url``'s database and refuses new ones
    (as a server restart or a network cut would) until the block ends."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")

    def connections(allowed: bool) -> None:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{url.database}" '
                                    f'WITH ALLOW_CONNECTIONS {str(allowed).lower()}'))
            if not allowed:
                connection.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                        " WHERE datname = :name"), {"name": url.database})
    try:
        connections(False)
        yield
    finally:
        connections(True)
        admin.dispose()
