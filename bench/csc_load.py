"""Remote signing under load: CSC signHash and authorize against ``tincay serve`` on loopback.

A doctor's P-256 key on SoftHSM (wrapped under the KEK, as `tincay issue --generate-key` makes
subscriber keys), one SAD per credential covering 10 hashes, one hash signed per request, every
signature recorded durably before it is returned. Beside it, in the same run and paired as
bench/http_load.py pairs them: the TSA's tokens/s (every token logged) and the constant-body
ceiling of the same server stack. Target (issue 20): signHash at least 0.8x the TSA's rate.

An OTP is accepted once per 30-s step and a SAD signs each of its hashes once, so the bench
enrols many credentials first and authorises each once (that phase gives authorize/s, whose
cost is mostly the PIN's memory-hard KDF, reported per check); wrk then sends each prepared
signHash request once. The rate counts only signatures the service logged, so a request past
the prepared pool (an error answer) never inflates it.

Each round's signers authorise just before the round signs their whole SADs, a signer's 10
hashes one after another, as an application signs right after its signer authorised (the keys a
round signs with in its seconds fit each worker's key cache, TINCAY_KEY_CACHE's default 1,000,
as the keys active within a SAD's lifetime should: docs/operations.md). authorize left the key
unwrapped in the worker that answered it; a signHash the other worker answers unwraps it there
(SoftHSM's C_UnwrapKey costs about a dozen signatures). The unwraps per signature (from
/metrics) are printed per round: they are the share of the rate that depends on how requests
meet workers. Authorising every signer before the first round instead left each round with keys
the later authorisations had evicted: two unwraps a SAD (0.2 a signature), none of them
authorize's.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import statistics
import subprocess
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.http_load import (CONNECTIONS, _ceiling_server, _cli, _wrk, bench_instance,
                             serving)
from ca.settings import KEY_CACHE

HASHES_PER_SAD = 10
PIN = "246810"
SHA256 = "2.16.840.1.101.3.4.2.1"
ECDSA_SHA256 = "1.2.840.10045.4.3.2"
ROUNDS = 3
TARGET = 0.8  # signHash/s at least this share of the TSA's tokens/s


def run(quick: bool = False) -> None:
    # enough prepared requests that a round's pool (credentials x 10 / ROUNDS) outlasts its
    # run at 4,000 signatures/s (the TSA's rate here): a pool that runs out measures
    # refusals, not signatures, and its rate is only a lower bound
    credentials = int(os.environ.get("BENCH_CSC_CREDENTIALS", 2400 if quick else 4800))
    seconds = 2 if quick else 4
    with tempfile.TemporaryDirectory(prefix="tincay-bench-csc-") as tmp:
        home = Path(tmp) / "home"
        env, port = bench_instance(home, "ec-p256")
        # sized as docs/operations.md says: the keys of the signers active within a SAD's
        # lifetime (a round's, authorised within a minute), where they outnumber the default
        cache = max(KEY_CACHE, -(-credentials // ROUNDS))
        env["TINCAY_KEY_CACHE"] = str(cache)
        enrolled, kdf_ms = _enrol(env, credentials)
        with serving(env, port) as base:
            token = _token(base, enrolled["client_id"], enrolled["client_secret"])
            tsq = _tsa_query(home)
            rows, authorised, authorising = [], 0, 0.0
            with _ceiling_server() as ceiling:
                for round_ in range(ROUNDS):
                    started = time.perf_counter()
                    sads = _authorize_all(base, token, enrolled["credentials"][round_::ROUNDS])
                    authorising += time.perf_counter() - started
                    authorised += len(sads)
                    pool = _sign_pool(home, sads, round_)
                    before, unwrapped = _logged(env), _unwraps(base)
                    if round_ % 2 == 0:  # the order alternates, as in http_load
                        top = _wrk(ceiling, seconds)
                        tsa = _wrk(base + "/tsa", seconds, tsq, "application/timestamp-query")
                        signed, wall = _sign_run(base, token, pool, seconds)
                    else:
                        signed, wall = _sign_run(base, token, pool, seconds)
                        tsa = _wrk(base + "/tsa", seconds, tsq, "application/timestamp-query")
                        top = _wrk(ceiling, seconds)
                    logged = _logged(env) - before
                    rows.append((signed / wall, tsa, top, logged, signed, len(pool.read_text(
                        encoding="utf-8").splitlines()), _unwraps(base) - unwrapped))
    _report(rows, authorised / authorising, kdf_ms, credentials, cache)


def _enrol(env: dict[str, str], count: int) -> tuple[dict[str, Any], float]:
    """A client, and ``count`` clinicians each with a P-256 key made on the HSM and a
    credential (PIN, TOTP): through the services in this process, as `tincay issue
    --generate-key` and `tincay credential create` would, without a process per doctor."""
    import pyotp

    from ca.keys.base import KeySpec
    from ca.services import KeySource
    from cli.context import AppContext

    app = AppContext(env)
    try:
        service = app.service
        client = service.clients.add("bench-emr")
        spec = KeySpec.parse("ec-p256")
        enrolled = []
        for n in range(count):
            identity = f"CCCD:{79073000000 + n:012d}"
            issued = service.issuance.issue(
                "issuing-ca", "clinician",
                [("C", "VN"), ("O", "Bệnh viện Quận 11"), ("CN", f"Bác sĩ {n}"),
                 ("UID", identity)], KeySource(generate=spec))
            info, uri = service.credentials.create(issued.serial_hex, identity, ["bench-emr"],
                                                   PIN, authority="issuing-ca")
            enrolled.append((info.credential_id, pyotp.parse_uri(uri)))
        from ca.services.credential_common import hash_pin, pin_matches  # the KDF per check
        stored = hash_pin(PIN)
        started = time.perf_counter()
        for _ in range(5):
            pin_matches(stored, PIN)
        kdf_ms = (time.perf_counter() - started) / 5 * 1000
    finally:
        app.close()
    return ({"client_id": client.client.client_id, "client_secret": client.client_secret,
             "credentials": enrolled}, kdf_ms)


def _post(url: str, body: dict, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _token(base: str, client_id: str, secret: str) -> str:
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    request = urllib.request.Request(f"{base}/csc/v2/auth/login", b"{}",
                                     {"Content-Type": "application/json",
                                      "Authorization": f"Basic {basic}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["access_token"]


def _authorize_all(base: str, token: str, credentials: list) -> list:
    """One SAD per credential for 10 fresh hashes, 8 clients at once."""
    def authorize(item: tuple[str, Any]) -> tuple[str, str, list[str]]:
        credential_id, totp = item
        hashes = [base64.b64encode(hashlib.sha256(secrets.token_bytes(16)).digest()).decode()
                  for _ in range(HASHES_PER_SAD)]
        answer = _post(f"{base}/csc/v2/credentials/authorize", {
            "credentialID": credential_id, "numSignatures": HASHES_PER_SAD, "hashes": hashes,
            "hashAlgorithmOID": SHA256,
            "authData": [{"id": "PIN", "value": PIN}, {"id": "OTP", "value": totp.now()}]},
            token)
        return credential_id, answer["SAD"], hashes

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(authorize, credentials))


def _sign_pool(home: Path, sads: list, round_: int) -> Path:
    """A round's prepared signHash bodies, one line each: whole SADs, each SAD's hashes in a
    row."""
    bodies = [json.dumps({"credentialID": credential_id, "SAD": sad, "hashes": [h],
                          "hashAlgorithmOID": SHA256, "signAlgo": ECDSA_SHA256})
              for credential_id, sad, hashes in sads for h in hashes]
    path = home / f"sign-{round_}.jsonl"
    path.write_text("\n".join(bodies) + "\n", encoding="utf-8")
    return path


def _unwraps(base: str) -> float:
    """Subscriber keys unwrapped so far, summed over the workers (/metrics)."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    found = re.search(r"^tincay_subscriber_key_unwraps_total (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


# Each thread formats its share of the prepared requests once, in init(): wrk.format per
# request in request() cost the client CPU the server shares on a small machine.
_SIGN_SCRIPT = """
local requests, sent = {{}}, 0
local threads = {{}}
function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads - 1)
end
function init(args)
  local n = 0
  for line in io.lines("{pool}") do
    if n % {threads} == id then
      table.insert(requests, wrk.format("POST", "/csc/v2/signatures/signHash",
        {{["Content-Type"] = "application/json", ["Authorization"] = "Bearer {token}"}}, line))
    end
    n = n + 1
  end
end
function request()
  sent = sent + 1
  return requests[((sent - 1) % #requests) + 1]
end
"""


def _sign_run(base: str, token: str, pool: Path, seconds: int) -> tuple[int, float]:
    """wrk sending each prepared request once (then repeats, which the service refuses):
    (signatures granted, seconds). Granted = 2xx answers wrk counted."""
    script = pool.with_suffix(".lua")
    script.write_text(_SIGN_SCRIPT.format(pool=pool, threads=2, token=token), encoding="utf-8")
    out = subprocess.run(["wrk", "-t2", f"-c{CONNECTIONS}", "-s", str(script),
                          f"-d{seconds}s", base + "/csc/v2/signatures/signHash"],
                         capture_output=True, text=True, check=True).stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if done is None:
        raise RuntimeError(f"wrk printed no request count:\n{out}")
    wall = float(done.group(2)) / (1000 if done.group(3) == "ms" else 1)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return int(done.group(1)) - (int(errors.group(1)) if errors else 0), wall


def _tsa_query(home: Path) -> Path:
    data = home / "record.txt"
    data.write_bytes(b"bench")
    tsq = home / "q.tsq"
    subprocess.run(["openssl", "ts", "-query", "-data", str(data), "-sha256", "-cert", "-out",
                    str(tsq)], check=True, capture_output=True)
    return tsq


def _logged(env: dict[str, str]) -> int:
    # past the listing's default 1,000 rows the count would stop growing
    return len(json.loads(_cli(env, "csc", "log", "--json", "--limit", "1000000")))


def _report(rows: list, authorize_rate: float, kdf_ms: float, credentials: int,
            cache: int) -> None:
    print(f"remote signing (CSC v2), P-256 doctor keys on SoftHSM, {credentials:,} credentials, "
          f"a SAD for {HASHES_PER_SAD} hashes each, one hash per signHash, wrk -t2 "
          f"-c{CONNECTIONS}, TINCAY_KEY_CACHE={cache:,}:")
    ratios = []
    for n, (sign_rate, tsa, top, logged, signed, pool, unwraps) in enumerate(rows, 1):
        ratios.append(sign_rate / tsa)
        short = " (the pool ran out: a lower bound)" if signed >= pool else ""
        print(f"  run {n}: signHash {sign_rate:7,.0f}/s ({signed:,} signed{short}, {logged:,} "
              f"in the log, {unwraps / max(logged, 1):.2f} unwraps a signature), TSA "
              f"{tsa:7,.0f} tokens/s, ceiling {top:7,.0f} req/s: x{sign_rate / tsa:.2f} the "
              f"TSA, {sign_rate / top:.0%} of the ceiling")
    median = statistics.median(ratios)
    print(f"  signHash / TSA: x{median:.2f} ({min(ratios):.2f}-{max(ratios):.2f}; target >= "
          f"x{TARGET}: {'met' if median >= TARGET else 'MISSED'})")
    print(f"  authorize (PIN + TOTP, 8 clients): {authorize_rate:,.0f}/s; the PIN's KDF costs "
          f"{kdf_ms:.0f} ms per check")
