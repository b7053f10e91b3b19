"""The composition root: settings -> engine, key backend, profiles, clock -> services.

Everything is built lazily, so ``tincay profiles list`` touches neither the database nor the HSM,
and an HSM problem surfaces only in commands that need a key. Imported lazily too: every
``tincay`` command imports this module, and ``tincay --help`` should not wait for SQLAlchemy or
pydantic (bench/cli_startup.py).
"""
from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Mapping

from ca.clock import Clock, SystemClock
from ca.errors import ConfigurationError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ca.keys.base import KeyBackend
    from ca.profiles import ProfileSet
    from ca.services import CertificateAuthority


class AppContext:
    """One per CLI invocation (or per app worker); owns the engine and the HSM session."""

    def __init__(self, env: Mapping[str, str] | None = None, clock: Clock | None = None, *,
                 migrate: bool = True, create_database: bool = False) -> None:
        from ca.settings import Settings

        self.settings = Settings.from_env(env)
        self.clock = clock or SystemClock()
        # server workers skip it: `tincay serve` checked and migrated before forking, and a
        # worker (re)started while the database is away must boot all the same and refuse
        # requests in-protocol until it is back, so a worker does not even read the revision
        self._migrate = migrate
        self._create = create_database  # only tincay init and tincay demo make a database

    @cached_property
    def profiles(self) -> ProfileSet:
        from ca.profiles import load_profiles

        return load_profiles(self.settings.profiles_dir)

    @cached_property
    def engine(self):  # type: ignore[no-untyped-def]  # sqlalchemy stays behind ca.store
        from ca.files import private_dir, restrict
        from ca.store.db import create_engine_for, migrate_if_behind, stored_revision

        # TINCAY_HOME holds the database, the PIN files and the demo token: 0700 when tincay
        # makes it (init, demo), and an older install's 0755 home tightened (ca.files).
        if self._create:
            private_dir(self.settings.home)
        restrict(self.settings.home)
        engine = create_engine_for(self.settings.database_url, create=self._create)
        if not self._migrate:
            return engine
        revision = stored_revision(engine)  # read once: both checks below need it
        if not self._create and revision is None:
            engine.dispose()
            raise ConfigurationError(
                f"no tincay database at {self._where()}: create one with tincay init "
                "--hierarchy SPEC (or tincay demo), or set TINCAY_HOME or TINCAY_DATABASE_URL "
                "to the CA's")
        migrate_if_behind(engine, revision)
        return engine

    def _where(self) -> str:
        from sqlalchemy.engine import make_url

        url = make_url(self.settings.database_url)
        if url.get_backend_name() == "sqlite" and url.database:
            return url.database
        return url.render_as_string(hide_password=True)

    @cached_property
    def keys(self) -> KeyBackend:
        from ca.keys.pkcs11 import Pkcs11Backend

        # The demo token's config under TINCAY_HOME, unless the operator chose one: SoftHSM reads
        # SOFTHSM2_CONF once, when the module is loaded, so it must be set before that.
        if self.settings.softhsm_conf is not None and "SOFTHSM2_CONF" not in os.environ:
            from ca.keys.softhsm import write_config

            # derived from TINCAY_HOME each time, so a copied or moved home uses its own token
            os.environ["SOFTHSM2_CONF"] = str(write_config(self.settings.home))
        return Pkcs11Backend(self.settings.pkcs11_module, self.settings.pkcs11_token,
                             self.settings.pin)

    @cached_property
    def service(self) -> CertificateAuthority:
        from ca.services import CertificateAuthority
        from ca.store.db import make_session_factory

        return CertificateAuthority(make_session_factory(self.engine), self.keys,
                                    lambda: self.profiles, self.clock, self.settings.public_url)

    def close(self) -> None:
        if "service" in self.__dict__:
            self.service.close()
        if "keys" in self.__dict__:
            self.keys.close()
        if "engine" in self.__dict__:
            self.engine.dispose()
