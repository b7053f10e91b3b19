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
import time

import pytest


def _patched_python(code: str, *args: str) -> dict:
    prelude = "from gevent import monkey; monkey.patch_all()\nimport json, sys\n"
    result = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code), *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_group_commit_batches_greenlets() -> None:
    """50 greenlets reach the log at different turns of the event loop (each first waits up to
    four turns, as requests whose bytes arrive later do): the leader waits until every one of
    them has queued its record. Committing at once takes 50 transactions, one yield to the
    ready greenlets before leading (the first design) 2."""
    seen = _patched_python("""
        import gevent
        from ca.store.group_commit import GroupCommitter
        batches = []
        committer = GroupCommitter(lambda items, deadline: batches.append(list(items)))
        def request(i):
            for _ in range(i % 5):
                gevent.sleep(0)
            committer.submit(i)
        gevent.joinall([gevent.spawn(request, i) for i in range(50)], raise_error=True)
        print(json.dumps({"batches": batches, "commits": committer.commits}))
    """)
    assert sorted(i for batch in seen["batches"] for i in batch) == list(range(50))
    assert seen["commits"] == len(seen["batches"]) == 1


def test_group_commit_gathers_for_a_bounded_time() -> None:
    """A greenlet that never lets the event loop idle (it yields in a loop for 5 s) does not
    hold the log back: the leader commits after its 50 ms gathering bound."""
    seen = _patched_python("""
        import time
        import gevent
        from ca.store.group_commit import GroupCommitter
        committer = GroupCommitter(lambda items, deadline: None, gather=0.05)
        end = time.monotonic() + 5
        def spin():
            while time.monotonic() < end:
                gevent.sleep(0)
        spinner = gevent.spawn(spin)
        gevent.sleep(0.01)
        start = time.monotonic()
        committer.submit("token")
        took = time.monotonic() - start
        spinner.kill()
        print(json.dumps({"took": took, "commits": committer.commits}))
    """)
    assert seen["commits"] == 1
    assert 0.04 <= seen["took"] < 2


def test_group_commit_without_gevent_does_not_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under threads the gathering wait is skipped: gevent is not even imported for it."""
    import ca.store.greenlets

    monkeypatch.delitem(sys.modules, "gevent.monkey", raising=False)
    assert not ca.store.greenlets.gevent_patched()
    start = time.monotonic()
    ca.store.greenlets.wait_for_other_greenlets(5)
    assert time.monotonic() - start < 1
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
