"""Files and directories only the CA's own user may read: TINCAY_HOME, the SQLite database
and its -wal/-shm files, the PIN files, the demo token's directory.

The database holds every subject, the audit trail and the requesters' IP addresses of the
time-stamp log; the home holds the HSM PIN of a demo. A umask of 022 would leave all of them
readable by every local user, so tincay does not rely on the umask: directories it creates are
0700 and files 0600, and an existing file or directory that is readable by group or others
(an older install) is tightened when tincay opens it, with a warning saying so.

Ground floor: imports nothing of tincay, no database or web library.
"""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("tincay.files")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` and every missing parent with mode 0700 (``Path.mkdir(parents=True)``
    would give the parents the umask's mode); an existing directory is left as it is."""
    missing = []
    for level in (path, *path.parents):
        if level.exists():
            break
        missing.append(level)
    for level in reversed(missing):
        try:
            level.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:  # made meanwhile by another process
            continue
        os.chmod(level, PRIVATE_DIR)  # mkdir's mode goes through the umask too
    return path


def restrict(path: Path, *, warn: bool = True) -> bool:
    """Take group and others' permissions off ``path`` if it exists and is ours; whether it
    changed. A file of another user (a root-owned home the service only reads) is left alone:
    its owner decides, and failing here would stop a CA that works."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return False
    mode = stat.S_IMODE(info.st_mode)
    if not mode & 0o077 or info.st_uid != os.geteuid():
        return False
    try:
        os.chmod(path, mode & 0o700)
    except OSError:
        return False
    if warn:
        log.warning("%s was readable by other users (%04o): now %04o", path, mode, mode & 0o700)
    return True


def write_secret(path: Path, value: str) -> None:
    """Write ``value`` to a new file only its owner can read (refuses to overwrite one)."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
