"""Whether this process runs greenlets: gunicorn's gevent worker patched it before loading the app.

Under gevent every request of a worker runs on one OS thread, switching only where it waits on
I/O. Code that batches the work of concurrent callers, or waits on a database socket, must then
yield to the event loop on purpose (ca.store.group_commit, ca.store.db); under threads it must
not, since every extra yield there is a GIL hand-over.
"""
from __future__ import annotations

import sys


def gevent_patched() -> bool:
    """True in a process whose ``threading`` gevent's monkey-patching replaced."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def yield_to_ready_greenlets() -> None:
    """Let every greenlet that can run now run until it waits (no-op without gevent)."""
    if gevent_patched():
        import gevent

        gevent.sleep(0)
