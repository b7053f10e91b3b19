"""Engines, sessions and schema migrations for SQLite (embedded default) and PostgreSQL.

Built by the composition root (CLI, app factory, test fixtures); nothing here is module-level
state. Migrations are Alembic's, run programmatically so an operator never needs an alembic.ini.
"""
from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from ca.errors import ConfigurationError, StoreError
from ca.files import private_dir, restrict
from ca.store.greenlets import gevent_patched

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_MS = 30000  # how long a SQLite statement waits for another process's lock


POSTGRES_CONNECT_TIMEOUT = 5  # seconds


def create_engine_for(url: str, *, create: bool = False) -> Engine:
    """An engine for ``url`` with the settings each backend needs.

    SQLite: a file that does not exist is not created (opened with ``mode=rw``: a worker or
    command whose database was moved away gets "unable to open database file", not a new
    empty database that answers "no such table" and then stands in the CA's place) unless
    ``create`` (tincay init and demo, test fixtures), which also creates the parent
    directory; WAL journaling (readers never block the writer)
    with ``synchronous=FULL`` (each commit fsyncs the WAL, so a committed certificate or
    time-stamp record survives a power loss or an OS crash, not only a process crash as with
    NORMAL; the TSA's group commit shares one fsync among a batch of tokens), foreign keys
    enforced, a busy timeout so concurrent CLI and server processes wait instead of
    failing; ``sqlite://`` (in-memory) shares one connection so every session sees the same data.
    PostgreSQL: pre-ping, so a worker survives a database restart; a connect timeout of
    POSTGRES_CONNECT_TIMEOUT seconds unless the URL sets ``connect_timeout`` (a server behind a
    firewall that drops packets would otherwise hold a command for the kernel's two minutes).
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigurationError(f"TINCAY_DATABASE_URL {url!r} is not a database URL") from None
    kwargs: dict[str, Any] = {}
    database_file: Path | None = None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            database_file = Path(database)
            if create:
                private_dir(database_file.parent)
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        kwargs["pool_pre_ping"] = True
        if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
            kwargs["connect_args"] = {"connect_timeout": POSTGRES_CONNECT_TIMEOUT}
    try:
        engine = create_engine(url, **kwargs)
    except (ArgumentError, ImportError) as exc:
        raise ConfigurationError(f"TINCAY_DATABASE_URL: {exc}") from None
    if engine.dialect.name == "sqlite":
        if database_file is not None:
            event.listen(engine, "connect", _owner_only(database_file))
        event.listen(engine, "connect", _sqlite_pragmas)
        if not create and parsed.database not in (None, "", ":memory:") and \
                "uri" not in parsed.query:  # a file: URI chooses its own mode
            event.listen(engine, "do_connect", _open_existing_only)
    elif engine.dialect.driver == "psycopg2" and gevent_patched():
        _wait_for_postgres_cooperatively()
    return engine


def _wait_for_postgres_cooperatively() -> None:
    """Under gevent, have psycopg2 wait for the server through ``select()``, which gevent
    turned into a wait on its event loop: a worker's other requests go on while one waits for
    PostgreSQL (across a network, a round trip would otherwise stall the whole worker). This is
    psycopg2's own mechanism for coroutine libraries; the setting is per process."""
    import psycopg2.extensions
    import psycopg2.extras

    psycopg2.extensions.set_wait_callback(psycopg2.extras.wait_select)


def _owner_only(database: Path) -> Callable[[Any, Any], None]:
    """A connect hook that keeps the database file and its -wal and -shm 0600 (ca.files).

    It runs before the WAL pragma: SQLite gives the -wal and -shm files it creates later the
    database file's mode, so a database tightened here never has readable companions. The
    file SQLite has just created is empty (tightened silently); a loose file with data in it
    is an older install's, tightened with a warning."""
    def hook(_dbapi_connection: Any, _record: Any) -> None:
        for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
            try:
                size = path.stat().st_size
            except FileNotFoundError:  # -wal and -shm go when another process's last closes
                continue
            restrict(path, warn=size > 0)
    return hook


def _open_existing_only(_dialect: Any, _record: Any, cargs: list, cparams: dict) -> None:
    """Open the SQLite file as a ``file:`` URI with ``mode=rw``: never create it."""
    cargs[0] = f"file:{quote(str(cargs[0]))}?mode=rw"
    cparams["uri"] = True


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (Alembic); safe to call on every start."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except OperationalError as exc:
        raise StoreError(f"database {engine.url.render_as_string(hide_password=True)}: "
                         f"{exc.orig}") from None


def append_only_ddl(table: str, dialect: str) -> list[str]:
    """The statements that make ``table`` refuse UPDATE and DELETE in the database itself.

    Shared by migration 0001 and :func:`create_throwaway_schema`, so keep it as it is: a new
    rule needs a new migration, not an edit here.
    """
    if dialect == "sqlite":
        return [f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                for verb in ("UPDATE", "DELETE")]
    return [f"""
        CREATE FUNCTION {table}_append_only() RETURNS trigger AS $$
        BEGIN RAISE EXCEPTION '{table} is append-only'; END $$ LANGUAGE plpgsql""",
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()"]


def create_throwaway_schema(engine: Engine) -> None:
    """The schema the migrations build, created from the models in one step, for databases
    that live and die with one process (ca/testing.py's in-memory SQLite). Importing Alembic
    and running its chain cost ~0.3 s of a throwaway hierarchy's 0.5 s budget; such a
    database is never migrated later. tests/test_service.py checks both routes give the same
    tables, indexes and triggers."""
    from sqlalchemy import insert

    from ca import chain
    from ca.store.models import AuditEvent, Base, LogChain

    with engine.begin() as connection:
        Base.metadata.create_all(connection)
        for statement in append_only_ddl(AuditEvent.__tablename__, engine.dialect.name):
            connection.exec_driver_sql(statement)
        connection.execute(insert(LogChain.__table__), [  # each chain's row, as 0010
            {"name": name} for name in chain.CHAINS])


def holds_tincay(engine: Engine) -> bool:
    """Whether ``engine`` points at a database tincay made (migrated at least once)."""
    return stored_revision(engine) is not None


@cache
def head_revision() -> str:
    """The newest migration's revision. Revisions are numbered like their files
    (``0004_....py`` is revision "0004"), so this needs no Alembic import; a test holds it to
    what Alembic itself computes."""
    return max(path.name[:4] for path in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


def stored_revision(engine: Engine) -> str | None:
    """The revision the database is at (Alembic's version table), None for a database tincay
    never migrated; read with one query, without importing Alembic.

    A SQLite file that does not exist is None without connecting, since connecting would
    create it: a command run outside the CA's TINCAY_HOME must not leave an empty database
    behind."""
    from sqlalchemy import inspect

    url = engine.url
    if url.get_backend_name() == "sqlite" and (
            url.database in (None, "", ":memory:") or not Path(url.database).exists()):
        return None
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    except OperationalError as exc:
        raise StoreError(f"database {url.render_as_string(hide_password=True)}: "
                         f"{exc.orig}") from None


def migrate_if_behind(engine: Engine, current: str | None) -> None:
    """:func:`migrate` when ``current`` (:func:`stored_revision`, which the caller has read
    already) is not the newest revision: what every command does at start, so a CLI call on a
    current database costs one query, not Alembic's start-up (about as long as the rest of the
    command)."""
    if current != head_revision():
        migrate(engine)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit, so describe() works on returned rows."""
    return sessionmaker(engine, expire_on_commit=False)
