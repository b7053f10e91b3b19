"""tsp-client (PyPI) as a client of tincay's TSA. Runs in tsp-client's own virtual environment
(its pyOpenSSL<24 pin needs a cryptography older than tincay's), so it imports nothing of
tincay's and speaks only HTTP.

usage: python tsp_client_check.py TSA_URL ROOT.pem CASE [CASE ...]
  verify  a TimeStampReq built here (SHA-256, certReq, a 64-bit nonce), POSTed with requests,
          the token judged by TSPVerifier rooted at ROOT.pem: signature, imprint, nonce, the
          ESSCertIDv2 signing certificate, the TSA's timeStamping EKU and its chain to the root
          (OpenSSL's store: the token must carry the issuing CA)
  sign    TSPSigner.sign, the client's own request (SHA-512, certReq, a 256-bit nonce from
          secrets.token_bytes, held here to one whose top bit is set: a 33-octet INTEGER) and
          its own checks of the reply, genTime within a minute of this machine's clock
prints "CASE: ok serial=N" or "CASE: FAIL <error>" per case.
"""
import hashlib
import secrets
import sys

import requests
from asn1crypto import algos, tsp
from tsp_client.algorithms import DigestAlgorithm
from tsp_client.signer import SigningSettings, TSPSigner
from tsp_client.verifier import TSPVerifier

MESSAGE = "Bệnh án điện tử".encode()


def verify(url: str, verifier: TSPVerifier) -> str:
    nonce = secrets.randbits(63) | 1 << 63
    request = tsp.TimeStampReq({
        "version": 1,
        "message_imprint": {"hash_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
                            "hashed_message": hashlib.sha256(MESSAGE).digest()},
        "nonce": nonce, "cert_req": True})
    reply = requests.post(url, data=request.dump(), timeout=30,
                          headers={"Content-Type": "application/timestamp-query"})
    reply.raise_for_status()
    response = tsp.TimeStampResp.load(reply.content)
    if response["status"]["status"].native != "granted":
        raise RuntimeError(f"not granted: {response['status'].native}")
    result = verifier.verify(response["time_stamp_token"].dump(), message=MESSAGE, nonce=nonce)
    return f"ok serial={result.tst_info['serial_number']}"


class RootedSigner(TSPSigner):
    """TSPSigner verifies against certifi's roots; a private hierarchy needs its own root."""

    def __init__(self, verifier: TSPVerifier) -> None:
        super().__init__()
        self._verifier = verifier


def sign(url: str, verifier: TSPVerifier) -> str:
    real = secrets.token_bytes

    def top_bit_set(n: int = 32) -> bytes:  # the signer reads it little-endian
        data = bytearray(real(n))
        data[-1 if sys.byteorder == "little" else 0] |= 0x80
        return bytes(data)

    secrets.token_bytes = top_bit_set
    try:
        token = RootedSigner(verifier).sign(MESSAGE, signing_settings=SigningSettings(
            tsp_server=url, digest_algorithm=DigestAlgorithm.SHA512))
    finally:
        secrets.token_bytes = real
    result = verifier.verify(token, message_digest=hashlib.sha512(MESSAGE).digest())
    return f"ok serial={result.tst_info['serial_number']}"


def main() -> None:
    url, root, *cases = sys.argv[1:]
    verifier = TSPVerifier(ca_pem_file=root)
    verifier.require_ess_cert_id_v2 = True  # RFC 5816: tincay sends ESSCertIDv2 only
    for case in cases:
        try:
            print(f"{case}: {globals()[case](url, verifier)}", flush=True)
        except Exception as exc:  # any failure is this case's verdict, reported to the test
            reason = " ".join(str(exc).split())  # one line per case
            print(f"{case}: FAIL {type(exc).__name__}: {reason}", flush=True)


if __name__ == "__main__":
    main()
