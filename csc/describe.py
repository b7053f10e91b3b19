"""What the CSC API says about itself (``info``) and about a credential (``credentials/info``,
and v2 ``credentials/list`` with credentialInfo), in both versions' names.

v1 (1.0.4.0) puts the factors in ``PIN`` and ``OTP`` objects; v2 (2.0.0.2) in ``auth``
(mode, expression, objects). Both carry ``key`` (status, algo, len, curve), ``cert`` (status,
certificates, and with certInfo the names, serial and validity), ``authMode``, ``SCAL`` and an
integer ``multisign``: pyHanko's client needs ``cert.certificates`` (signer first),
``key.algo``, ``multisign`` and ``SCAL``.

Pure: imports no flask, sqlalchemy or click.
"""
from __future__ import annotations

import base64
from typing import Any, Sequence

from cryptography import x509

__all__ = ["ALL_SIGN_ALGORITHMS", "HASHLESS_SIGN_ALGORITHMS", "SIGN_ALGORITHMS",
           "credential_json", "service_info"]

# signature algorithm OIDs that name their hash (hashAlgo may then be omitted)
SIGN_ALGORITHMS = {"1.2.840.113549.1.1.11": "2.16.840.1.101.3.4.2.1",
                   "1.2.840.113549.1.1.12": "2.16.840.1.101.3.4.2.2",
                   "1.2.840.113549.1.1.13": "2.16.840.1.101.3.4.2.3",
                   "1.2.840.10045.4.3.2": "2.16.840.1.101.3.4.2.1",
                   "1.2.840.10045.4.3.3": "2.16.840.1.101.3.4.2.2",
                   "1.2.840.10045.4.3.4": "2.16.840.1.101.3.4.2.3"}
# the key's algorithm alone (PKCS#1 v1.5, ECDSA): the hash must be named beside it. RSASSA-PSS
# names its hash in signAlgoParams (absent: SHA-256).
HASHLESS_SIGN_ALGORITHMS = ("1.2.840.113549.1.1.1", "1.2.840.10045.2.1")
ALL_SIGN_ALGORITHMS = ("1.2.840.113549.1.1.1", "1.2.840.113549.1.1.10",
                       *SIGN_ALGORITHMS, "1.2.840.10045.2.1")
# CSC knows four certificate statuses; one not yet valid cannot sign, as a suspended one
_CERT_STATUS = {"valid": "valid", "expired": "expired", "revoked": "revoked",
                "suspended": "suspended", "not_yet_valid": "suspended"}
SPECS = {"v1": "1.0.4.0", "v2": "2.0.0.2"}


def service_info(api: Any, version: str, methods: Sequence[str]) -> dict[str, Any]:
    """The ``info`` answer: ``api`` is the csc.core.CscApi (name, logo, lang, URLs)."""
    body: dict[str, Any] = {
        "specs": SPECS[version], "name": api.name, "logo": api.logo, "region": "VN",
        "lang": api.lang, "description": api.description,
        "authType": ["oauth2client", "basic"],
        "methods": [m for m in methods if _served(api, m)],
    }
    if api.oauth2_url:
        body["oauth2"] = api.oauth2_url
    if version == "v2":
        body["asynchronousOperationMode"] = False
        body["validationInfo"] = False
        body["signAlgorithms"] = {"algos": list(ALL_SIGN_ALGORITHMS)}
    return body


def _served(api: Any, method: str) -> bool:
    if method.startswith("auth/"):
        return api.tokens is not None
    if method == "signatures/timestamp":
        return api.stamper is not None
    return method == "info" or api.credentials is not None


def _der_time(value: Any) -> str:
    """GeneralizedTime text, as CSC writes validFrom and validTo: ``20261202130000Z``."""
    return value.strftime("%Y%m%d%H%M%SZ")


def _cert_json(info: Any, certificates: str, cert_info: bool) -> dict[str, Any]:
    cert: dict[str, Any] = {"status": _CERT_STATUS.get(info.certificate_status,
                                                       info.certificate_status)}
    chain = list(info.certificates)
    if certificates == "single":
        chain = chain[:1]
    if certificates != "none":
        cert["certificates"] = [base64.b64encode(der).decode("ascii") for der in chain]
    if cert_info and info.certificates:
        signer = x509.load_der_x509_certificate(info.certificates[0])
        cert.update({"issuerDN": signer.issuer.rfc4514_string(),
                     "serialNumber": format(signer.serial_number, "x"),
                     "subjectDN": signer.subject.rfc4514_string(),
                     "validFrom": _der_time(signer.not_valid_before_utc),
                     "validTo": _der_time(signer.not_valid_after_utc)})
    return cert


def credential_json(info: Any, version: str, certificates: str = "single",
                    cert_info: bool = False, auth_info: bool = False,
                    lang: str = "en-US") -> dict[str, Any]:
    """One credential (a ca.services.credentials.CredentialInfo) as credentials/info says
    it. SCAL 2: every SAD is bound to the hashes it was issued for."""
    key: dict[str, Any] = {"status": "enabled" if info.status == "active" else "disabled",
                           "algo": list(info.sign_algorithm_oids), "len": int(info.key_length)}
    if info.curve_oid:
        key["curve"] = info.curve_oid
    body: dict[str, Any] = {"key": key, "cert": _cert_json(info, certificates, cert_info),
                            "authMode": "explicit", "SCAL": "2",
                            "multisign": int(info.multisign), "lang": lang}
    if version == "v1":
        body["PIN"] = {"presence": "true", "format": "A", "label": "PIN"}
        body["OTP"] = {"presence": "true", "type": "offline", "ID": "totp",
                       "provider": "tincay", "format": "N", "label": "OTP",
                       "description": "the 6-digit code of the signer's authenticator app"}
        if not auth_info:  # v1 describes the factors only when asked
            body["PIN"] = {"presence": "true"}
            body["OTP"] = {"presence": "true", "type": "offline"}
    elif auth_info:
        body["auth"] = {"mode": "explicit", "expression": "PIN AND OTP", "objects": [
            {"type": "Password", "id": "PIN", "format": "A", "label": "PIN"},
            {"type": "Password", "id": "OTP", "format": "N", "generator": "totp",
             "label": "OTP",
             "description": "the 6-digit code of the signer's authenticator app"}]}
    return body
