"""Create SoftHSM 2 tokens for demos and tests without a PIN ever touching argv.

``softhsm2-util --init-token`` only takes PINs on its command line or from a terminal, so we give
it a pseudo-terminal and answer its prompts. Production HSMs are initialised by their own tooling.
"""
from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
from pathlib import Path

from ca.errors import ConfigurationError


def write_config(home: Path) -> Path:
    """A softhsm2.conf whose token directory lives under ``home``; returns its path."""
    tokens = home / "softhsm" / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = home / "softhsm" / "softhsm2.conf"
    if not conf.exists():
        conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                        "log.level = ERROR\nslots.removable = false\n", encoding="utf-8")
    return conf


def init_token(conf: Path, label: str, pin: str, so_pin: str, timeout: float = 30.0) -> None:
    """Initialise a free slot as token ``label`` (``SOFTHSM2_CONF=conf``)."""
    tool = shutil.which("softhsm2-util")
    if tool is None:
        raise ConfigurationError("softhsm2-util not found: apt-get install softhsm2")
    master, slave = pty.openpty()
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    proc = subprocess.Popen([tool, "--init-token", "--free", "--label", label],
                            stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    transcript = b""
    try:
        for answer in (so_pin, so_pin, pin, pin):
            buffer = b""
            while b"PIN:" not in buffer:
                ready, _, _ = select.select([master], [], [], timeout)
                if not ready:
                    raise ConfigurationError("softhsm2-util did not ask for a PIN in time")
                chunk = os.read(master, 1024)
                if not chunk:
                    raise ConfigurationError(
                        f"softhsm2-util failed: {transcript.decode(errors='replace').strip()}")
                buffer += chunk
                transcript += chunk
            os.write(master, answer.encode() + b"\n")
        proc.wait(timeout=timeout)
        tail = b""
        try:
            while True:
                ready, _, _ = select.select([master], [], [], 0.1)
                if not ready:
                    break
                chunk = os.read(master, 1024)
                if not chunk:
                    break
                tail += chunk
        except OSError:
            pass
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    if proc.returncode != 0:
        raise ConfigurationError(
            f"softhsm2-util could not initialise token {label!r}: "
            f"{tail.decode(errors='replace').strip()}")


def token_exists(conf: Path, label: str) -> bool:
    tool = shutil.which("softhsm2-util")
    if tool is None:
        return False
    out = subprocess.run([tool, "--show-slots"], capture_output=True, text=True,
                         env={**os.environ, "SOFTHSM2_CONF": str(conf)}, check=False).stdout
    return any(line.strip() == f"Label:            {label}".strip() or
               (line.strip().startswith("Label:") and line.split(":", 1)[1].strip() == label)
               for line in out.splitlines())
