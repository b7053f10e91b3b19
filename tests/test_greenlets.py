"""Under gunicorn's gevent worker (``tincay serve``'s default) requests are greenlets of one
thread: the token log must still batch concurrent records, and a wait for PostgreSQL must let
the worker's other requests run. Each case runs in a child process that gevent monkey-patches
first, as the worker does before it loads the app (patching pytest's own process would change
every later test)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest


def _patched_python(code: str, *args: str) -> dict:
    prelude = "from gevent import monkey; monkey.patch_all()\nimport json, sys\n"
    result = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code), *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_group_commit_batches_greenlets() -> None:
    """50 greenlets submit at once: without the yield before leading, the first would commit
    alone and each after it too (50 transactions)."""
    seen = _patched_python("""
        import gevent
        from ca.store.group_commit import GroupCommitter
        batches = []
        committer = GroupCommitter(lambda items: batches.append(list(items)))
        gevent.joinall([gevent.spawn(committer.submit, i) for i in range(50)], raise_error=True)
        print(json.dumps({"batches": batches, "commits": committer.commits}))
    """)
    assert sorted(i for batch in seen["batches"] for i in batch) == list(range(50))
    assert seen["commits"] == len(seen["batches"]) <= 2


def test_group_commit_without_gevent_does_not_yield(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under threads the yield is skipped: gevent is not even imported for it."""
    import ca.greenlets

    monkeypatch.delitem(sys.modules, "gevent.monkey", raising=False)
    assert not ca.greenlets.gevent_patched()
    ca.greenlets.yield_to_ready_greenlets()
    assert "gevent.monkey" not in sys.modules


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # SQLite has no server
def test_postgres_waits_let_other_greenlets_run(database_url: str) -> None:
    """One greenlet waits 0.5 s for PostgreSQL (pg_sleep) while another ticks every 10 ms:
    psycopg2 waiting in C would stall the ticker for the whole query."""
    seen = _patched_python("""
        import gevent
        from sqlalchemy import text
        from ca.store.db import create_engine_for
        engine = create_engine_for(sys.argv[1])
        ticks, done = [0], [False]
        def query():
            with engine.connect() as connection:
                connection.execute(text("SELECT pg_sleep(0.5)"))
            done[0] = True
        def tick():
            while not done[0]:
                ticks[0] += 1
                gevent.sleep(0.01)
        gevent.joinall([gevent.spawn(query), gevent.spawn(tick)], raise_error=True)
        print(json.dumps({"ticks": ticks[0]}))
    """, database_url)
    assert seen["ticks"] >= 20
