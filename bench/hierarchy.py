"""Throwaway hierarchies (issue 5): a fresh process to a served 3-level PKI, beside Certomancer.

What a test suite pays before its first test can run, measured in a fresh Python process each
time (nothing imported or warmed up beforehand), median of several runs:
- tincay: ``Hierarchy.from_spec(profiles/hierarchies/three-level.yaml)`` (root, intermediate,
  issuing CA, OCSP responder, TSA; in-memory keys generated and an in-memory database built in
  the run), 10 P-256 clinician certificates issued, ``serve()`` entered, and one OCSP request
  for a leaf answered "good" over HTTP;
- Certomancer, the same shape: three CA levels, an OCSP responder and a TSA, 10 P-256 leaves
  with AIA and CRL pointers, every certificate summoned, its Animator served by werkzeug on
  loopback and the same OCSP question answered. Certomancer cannot generate keys, so its 15
  keys are written before the clock starts: its figure leaves key generation out, ours keeps
  it in.

Reported: imports, building the hierarchy with its leaves, serving until the OCSP answer, and
the total after imports (issue 5's target: under 0.5 s), with the imports on top.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from bench.http_load import _free_port

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "profiles" / "hierarchies" / "three-level.yaml"
LEAVES = 10

# Both runners print one JSON line: seconds for imports, build, serve (to the OCSP answer).
_OCSP_CHECK = """
def ocsp_good(url, leaf, issuer):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp
    import urllib.request
    der = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build() \\
        .public_bytes(serialization.Encoding.DER)
    request = urllib.request.Request(url, data=der, method="POST",
                                     headers={"Content-Type": "application/ocsp-request"})
    # asn1crypto reads it: cryptography refuses Certomancer's fractional producedAt
    from asn1crypto import ocsp as asn1_ocsp
    answer = asn1_ocsp.OCSPResponse.load(urllib.request.urlopen(request, timeout=10).read())
    single = answer.basic_ocsp_response["tbs_response_data"]["responses"][0]
    assert single["cert_status"].name == "good", answer["response_status"].native
"""

_TINCAY = _OCSP_CHECK + """
import json, time
t0 = time.perf_counter()
from ca.testing import Hierarchy
import web.app  # what serve() imports, counted with the imports
t1 = time.perf_counter()
pki = Hierarchy.from_spec(SPEC)
leaves = [pki.issue("clinician", f"C=VN, O=BV, CN=Bac si {i}, UID=CCCD:0790730095{i:02d}",
                    key_type="ec-p256") for i in range(LEAVES)]
t2 = time.perf_counter()
with pki.serve() as url:
    ocsp_good(url + "/ocsp", leaves[0].certificate, pki.ca("hospital-ca"))
    t3 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "build": t2 - t1, "serve": t3 - t2}))
"""

_CERTOMANCER = _OCSP_CHECK + """
import json, threading, time
t0 = time.perf_counter()
from certomancer.registry import CertomancerConfig
from certomancer.integrations.animator import Animator, AnimatorArchStore
from werkzeug.serving import make_server
t1 = time.perf_counter()
config = CertomancerConfig.from_file(CONFIG)
arch = config.get_pki_arch("bench")
certs = {label: arch.get_cert(label) for label in LABELS}
t2 = time.perf_counter()
server = make_server("127.0.0.1", PORT, Animator(AnimatorArchStore(config.pki_archs),
                                                   with_web_ui=False), threaded=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
from cryptography import x509
leaf, issuer = (x509.load_der_x509_certificate(certs[n].dump()) for n in ("leaf0", "hospital"))
ocsp_good(f"http://127.0.0.1:{PORT}/bench/ocsp/hospital", leaf, issuer)
t3 = time.perf_counter()
server.shutdown()
print(json.dumps({"imports": t1 - t0, "build": t2 - t1, "serve": t3 - t2}))
"""


def run(quick: bool = False) -> None:
    runs = 3 if quick else 7
    ours = _median(_fresh(_TINCAY, SPEC=str(SPEC), LEAVES=LEAVES) for _ in range(runs))
    _report("tincay three-level + OCSP + TSA + 10 leaves, served", ours, runs)
    import importlib.util

    if importlib.util.find_spec("certomancer") is None:
        print("  Certomancer is not installed (make bench installs the bench extra); skipped")
        return
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="tincay-bench-certomancer-") as tmp:
        config, labels = _certomancer_config(Path(tmp), port)
        peer = _median(_fresh(_CERTOMANCER, CONFIG=str(config), LABELS=labels, PORT=port)
                       for _ in range(runs))
    _report("Certomancer 0.16, same shape (keys made beforehand)", peer, runs)
    print(f"  tincay's time / Certomancer's (below 1: tincay is faster): "
          f"x{ours['after imports'] / peer['after imports']:.2f} after imports, "
          f"x{ours['total'] / peer['total']:.2f} with them")


def _fresh(code: str, **constants: object) -> dict[str, float]:
    prelude = "".join(f"{name} = {value!r}\n" for name, value in constants.items())
    done = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise RuntimeError(f"hierarchy bench run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median(samples) -> dict[str, float]:
    samples = list(samples)
    out = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
    out["after imports"] = statistics.median(s["build"] + s["serve"] for s in samples)
    out["total"] = statistics.median(sum(s.values()) for s in samples)
    return out


def _report(title: str, figures: dict[str, float], runs: int) -> None:
    print(f"{title} (fresh process, median of {runs}):")
    print("  " + ", ".join(f"{key} {value:.3f} s" for key, value in figures.items()))


def _certomancer_config(folder: Path, port: int) -> tuple[Path, list[str]]:
    """Keys (P-256, PEM) and a Certomancer config with tincay's three-level shape."""
    import yaml
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    leaves = [f"leaf{i}" for i in range(LEAVES)]
    labels = ["root", "health", "hospital", "ocsp", "tsa", *leaves]
    for label in labels:
        (folder / f"{label}.key.pem").write_bytes(ec.generate_private_key(ec.SECP256R1())
                                                  .private_bytes(serialization.Encoding.PEM,
                                                                 serialization.PrivateFormat.PKCS8,
                                                                 serialization.NoEncryption()))
    validity = {"valid-from": "2026-01-01T00:00:00+0000", "valid-to": "2036-01-01T00:00:00+0000"}

    def usage(*names: str) -> dict:
        return {"id": "key_usage", "critical": True,
                "smart-value": {"schema": "key-usage", "params": list(names)}}

    def pointers(issuer: str, ocsp: bool) -> list[dict]:
        links: dict = {"ca-issuer-links": [{"repo": issuer}]}
        if ocsp:
            links["ocsp-responder-names"] = ["hospital"]
        return [{"id": "crl_distribution_points", "smart-value": {
                    "schema": "crl-dist-url", "params": {"crl-repo-names": [issuer]}}},
                {"id": "authority_information_access",
                 "smart-value": {"schema": "aia-urls", "params": links}}]

    def ca(issuer: str, path_len: int | None) -> dict:
        constraints: dict = {"ca": True}
        if path_len is not None:
            constraints["path_len_constraint"] = path_len
        extensions = [{"id": "basic_constraints", "critical": True, "value": constraints},
                      usage("digital_signature", "key_cert_sign", "crl_sign")]
        if path_len is not None:
            extensions += pointers(issuer, ocsp=False)
        return {"issuer": issuer, "validity": validity, "extensions": extensions}

    def end_entity(eku: str | None, *key_usage: str) -> dict:
        extensions = [usage(*key_usage), *pointers("hospital", ocsp=eku is None)]
        if eku is not None:
            extensions.append({"id": "extended_key_usage", "critical": eku == "time_stamping",
                               "value": [eku]})
        return {"issuer": "hospital", "validity": validity, "extensions": extensions}

    certs = {"root": ca("root", None), "health": ca("root", 1), "hospital": ca("health", 0),
             "ocsp": end_entity("ocsp_signing", "digital_signature"),
             "tsa": end_entity("time_stamping", "digital_signature"),
             **{leaf: end_entity(None, "digital_signature", "non_repudiation")
                for leaf in leaves}}
    config = {
        "external-url-prefix": f"http://127.0.0.1:{port}",
        "keysets": {"bench": {"path-prefix": str(folder),
                              "keys": {label: {"path": f"{label}.key.pem"} for label in labels}}},
        "pki-architectures": {"bench": {
            "keyset": "bench",
            "entity-defaults": {"country-name": "VN", "organization-name": "Bench"},
            "entities": {label: {"common-name": label} for label in labels},
            "certs": certs,
            "services": {
                "ocsp": {"hospital": {"for-issuer": "hospital", "responder-cert": "ocsp",
                                      "signing-key": "ocsp"}},
                "time-stamping": {"tsa": {"signing-key": "tsa", "signing-cert": "tsa"}},
                "crl-repo": {name: {"for-issuer": name, "signing-key": name,
                                    "simulated-update-schedule": "P7D"}
                             for name in ("root", "health", "hospital")},
                "cert-repo": {name: {"for-issuer": name, "publish-issued-certs": True}
                              for name in ("root", "health", "hospital")}}}},
    }
    path = folder / "certomancer.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path, labels
