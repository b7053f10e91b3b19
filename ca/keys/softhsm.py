"""Create SoftHSM 2 tokens for demos and tests without a PIN ever touching argv.

``softhsm2-util --init-token`` only takes PINs on its command line or from a terminal, so we give
it a pseudo-terminal and answer its prompts. Production HSMs are initialised by their own tooling.
"""
from __future__ import annotations

import os
import pty
import secrets
import select
import shutil
import subprocess
from pathlib import Path

from ca.errors import ConfigurationError
from ca.files import private_dir, write_secret


def write_config(home: Path) -> Path:
    """A softhsm2.conf whose token directory lives under ``home``; returns its path.

    SoftHSM wants an absolute token path, so the file is derived from ``home`` each time it
    is used and rewritten when it names another place: a TINCAY_HOME copied or moved keeps
    its keys beside its database, instead of writing them into the original's token."""
    tokens = private_dir(home.resolve() / "softhsm" / "tokens")
    conf = home / "softhsm" / "softhsm2.conf"
    text = (f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
            "log.level = ERROR\nslots.removable = false\n")
    if not conf.exists() or conf.read_text(encoding="utf-8") != text:
        conf.write_text(text, encoding="utf-8")
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
    return any(line.strip().startswith("Label:") and line.split(":", 1)[1].strip() == label
               for line in out.splitlines())


def ensure_demo_token(home: Path, label: str, pin_file: Path, env: dict[str, str]) -> dict[str, str]:
    """Make a SoftHSM token under ``home`` ready, creating config, PINs and token as needed.

    For demos and local development only. A PIN is generated into ``pin_file`` (mode 0600) unless
    the environment already provides one; the SO PIN goes to ``home``/softhsm/so-pin (0600),
    also when SOFTHSM2_CONF names a config elsewhere: the demo writes its secrets under
    TINCAY_HOME only, never beside a file the operator keeps somewhere else (a shared
    /etc/softhsm2.conf). Returns the environment variables the caller must export
    (SOFTHSM2_CONF, and TINCAY_PKCS11_PIN_FILE when generated) before the PKCS#11 module is
    loaded.
    """
    exports: dict[str, str] = {}
    conf_text = env.get("SOFTHSM2_CONF")
    conf = Path(conf_text) if conf_text else write_config(home)
    exports["SOFTHSM2_CONF"] = str(conf)
    if env.get("TINCAY_PKCS11_PIN"):
        pin = env["TINCAY_PKCS11_PIN"]
    else:
        path = Path(env.get("TINCAY_PKCS11_PIN_FILE") or pin_file)
        if not path.exists():
            write_secret(path, secrets.token_hex(12))
        pin = path.read_text(encoding="utf-8").splitlines()[0].strip()
        exports["TINCAY_PKCS11_PIN_FILE"] = str(path)
    if not token_exists(conf, label):
        so_pin_file = so_pin_path(home)
        if not so_pin_file.exists():
            write_secret(so_pin_file, secrets.token_hex(12))
        init_token(conf, label, pin, so_pin_file.read_text(encoding="utf-8").strip())
    return exports


def so_pin_path(home: Path) -> Path:
    """Where the demo keeps its token's SO PIN: under TINCAY_HOME, whatever SOFTHSM2_CONF says."""
    return home / "softhsm" / "so-pin"
