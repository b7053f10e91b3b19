"""A host's workers tell each other which subscriber keys are about to sign.

Each worker keeps its own unwrapped keys (ca.services.subscriber_keys: one PKCS#11 session per
process, DESIGN.md section 5). An authorisation unwraps its key in the worker that answered
it; the SAD's signHash calls then reach whichever worker their connections landed on (the
kernel spreads connections over the workers' sockets), and every other worker unwrapped the
key at its first signature there: SoftHSM's C_UnwrapKey costs about a dozen signatures, and
under bench/csc_load.py a tenth of the signatures paid one. So the authorising worker also
names the key to up to ``numSignatures - 1`` of the host's other workers (more could never
all be reached by the SAD's signatures), which unwrap it beside their requests, and the SAD's
signatures find it ready wherever they land. The unwraps are the same work, done while the
signer's application waits for its SAD instead of inside its signatures.

Transport: one Unix datagram socket per worker, named by its pid, in a private directory
(mode 0700) that `tincay serve` makes before it forks the workers and removes on exit
(TINCAY_KEY_PEERS_DIR). A message is a key's URI and nothing else: no signature, PIN, SAD or
key material crosses it, so another process of the same user could at most make the workers
unwrap keys. A send never blocks and a hint never fails a request: a full queue or a peer
restarting drops it, and that worker unwraps the key at its first signature, as before.
"""
from __future__ import annotations

import errno
import os
import random
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from ca.keys.uri import wrapped_key_id

PEERS_VARIABLE = "TINCAY_KEY_PEERS_DIR"
_SUFFIX = ".sock"
_LISTING_TTL = 1.0  # seconds a listing of the peers' sockets is reused
_MESSAGE_MAX = 256  # a key's URI: tincay:subscriber-key:<id>


class KeyPeers:
    """This worker's socket among its host's workers': ``announce`` names a key to others,
    ``listen`` hands the keys others name to a callback."""

    def __init__(self, directory: str | os.PathLike[str], name: str | None = None) -> None:
        """``name``: this worker's socket's, its pid by default (unique on the host)."""
        self.directory = Path(directory)
        self._pid = os.getpid()
        self.path = self.directory / f"{name or self._pid}{_SUFFIX}"
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)  # a full peer queue drops the hint, never waits
        self._listener: socket.socket | None = None
        self._listed: tuple[float, list[Path]] = (0.0, [])

    def listen(self, on_hint: Callable[[str], None]) -> None:
        """Bind this worker's socket and hand each key URI a peer names to ``on_hint``, in
        a daemon thread (a greenlet under gevent's patched threading). ``on_hint`` failing
        is the hint's loss only. The directory is made again if it went (a temporary-files
        cleaner, on a server up for months): a worker restarted then still joins."""
        self.directory.mkdir(mode=0o700, exist_ok=True)
        try:
            self.path.unlink()  # a dead worker's of the same pid
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self._listener = listener

        def serve() -> None:
            while True:
                try:
                    message = listener.recv(_MESSAGE_MAX)
                except OSError:
                    return  # closed
                if self._listener is not listener:
                    return  # closed (shut down: an empty read)
                try:
                    key_uri = message.decode("ascii")
                    if wrapped_key_id(key_uri) is None:
                        continue  # a token object's URI: nothing to unwrap
                    on_hint(key_uri)
                except Exception:  # noqa: BLE001 - garbled, or the key unwraps at its
                    pass  # first signature instead

        threading.Thread(target=serve, name="tincay-key-peers", daemon=True).start()

    def announce(self, key_uri: str, at_most: int) -> int:
        """Name ``key_uri`` to at most ``at_most`` other workers of this host (chosen at
        random among more); how many were sent the hint."""
        if at_most < 1 or os.getpid() != self._pid:
            return 0
        peers = self._peers()
        if len(peers) > at_most:
            peers = random.sample(peers, at_most)
        message, told = key_uri.encode("ascii"), 0
        for path in peers:
            try:
                self._sender.sendto(message, str(path))
                told += 1
            except (BlockingIOError, FileNotFoundError):
                pass  # a full queue, or a worker gone since the listing
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED:  # a worker that died: its socket stayed
                    _remove(path)
        return told

    def _peers(self) -> list[Path]:
        listed_at, peers = self._listed
        now = time.monotonic()
        if now - listed_at > _LISTING_TTL:
            try:
                peers = [path for path in self.directory.iterdir()
                         if path.name.endswith(_SUFFIX) and path != self.path]
            except OSError:
                peers = []
            self._listed = (now, peers)
        return peers

    def close(self) -> None:
        """Stop listening and remove this worker's socket."""
        self._sender.close()
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
            except OSError:
                pass
            listener.close()
            _remove(self.path)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


__all__ = ["KeyPeers", "PEERS_VARIABLE"]
