"""CLI start-up (issue 18): what an operator scripting a thousand revocations waits per call.

Each command runs in a fresh process against a demo home (SoftHSM token, SQLite database,
one issued certificate per revocation), median of several runs, printed as a ratio to a bare
``python -c pass`` and to ``python -c "import sqlalchemy.orm"`` measured alternately in the
same run. Targets: ``tincay --help`` at most 5x the bare interpreter; ``tincay ca list``,
``tincay cert show`` and ``tincay revoke`` at most 20x.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.http_load import TINCAY, _cli

TARGETS = {"--help": 5, "ca list": 20, "cert show": 20, "revoke": 20}


def _seconds(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, timeout=120)
    took = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return took


def run(quick: bool = False) -> None:
    runs = 5 if quick else 11
    from ca.keys.softhsm import ensure_demo_token

    with tempfile.TemporaryDirectory(prefix="tincay-bench-cli-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TINCAY_", "SOFTHSM2_"))}
        env.update(TINCAY_HOME=str(home), TINCAY_PKCS11_TOKEN="tincay-bench-cli")
        env.update(ensure_demo_token(home, "tincay-bench-cli", home / "pin", env))
        _cli(env, "init", "--hierarchy",
             str(Path(__file__).resolve().parent.parent / "profiles/hierarchies/demo.yaml"))
        serials = []
        for index in range(runs):
            out = home / f"leaf{index}.pem"
            csr = home / f"leaf{index}.csr"
            subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=x", "-keyout",
                            str(home / "leaf.key"), "-out", str(csr)], check=True,
                           capture_output=True)
            _cli(env, "issue", "--ca", "issuing-ca", "--profile", "citizen", "--subject",
                 "C=VN, CN=Bench Citizen, UID=CCCD:079073009568", "--csr", str(csr),
                 "--out", str(out))
            serials.append(subprocess.run(["openssl", "x509", "-in", str(out), "-noout",
                                           "-serial"], check=True, capture_output=True,
                                          text=True).stdout.strip().split("=")[1])
        commands = {
            "--help": lambda i: [TINCAY, "--help"],
            "ca list": lambda i: [TINCAY, "ca", "list"],
            "cert show": lambda i: [TINCAY, "cert", "show", serials[i]],
            "revoke": lambda i: [TINCAY, "revoke", serials[i], "--ca", "issuing-ca",
                                 "--reason", "superseded"],
        }
        bare: list[float] = []
        orm: list[float] = []
        timed: dict[str, list[float]] = {name: [] for name in commands}
        for i in range(runs):  # interleaved, so a drifting VM moves all of them alike
            bare.append(_seconds([sys.executable, "-c", "pass"], env))
            orm.append(_seconds([sys.executable, "-c", "import sqlalchemy.orm"], env))
            for name, argv in commands.items():
                timed[name].append(_seconds(argv(i), env))
        base = statistics.median(bare)
        print(f"CLI start-up, fresh process, median of {runs} (SQLite demo home): python -c pass "
              f"{base * 1000:.0f} ms; python -c 'import sqlalchemy.orm' "
              f"{statistics.median(orm) * 1000:.0f} ms = x{statistics.median(orm) / base:.1f}")
        for name, seconds in timed.items():
            ratio = statistics.median(seconds) / base
            verdict = "meets" if ratio <= TARGETS[name] else "misses"
            print(f"  tincay {name:<10} {statistics.median(seconds) * 1000:6.0f} ms = "
                  f"x{ratio:5.1f} python -c pass ({verdict} the target x{TARGETS[name]})")
