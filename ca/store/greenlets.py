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


def wait_for_other_greenlets(at_most: float) -> None:
    """Let the other greenlets of this thread run until each waits (the event loop is idle,
    with the requests that were already on their sockets read and handled) or, under a load
    that never lets the loop idle, for ``at_most`` seconds. No-op without gevent.

    A single ``gevent.sleep(0)`` runs only the greenlets ready at that instant: requests whose
    bytes arrive meanwhile wait for the next turn of the loop, and a caller batching their
    work (ca.store.group_commit) would leave them for the next batch.
    """
    if gevent_patched():
        import gevent

        with gevent.Timeout(at_most, False):
            gevent.idle()
