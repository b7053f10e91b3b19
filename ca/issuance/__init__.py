"""Pure certificate construction: (profile, subject, public key, issuer) -> certificate.

Issuance is split in two steps, after Boulder's issuance package:

* :func:`prepare` checks the request against the profile and the issuer and computes the
  exact DER of the TBSCertificate the HSM will sign (:mod:`~ca.issuance.tbs` frames it from
  parts cryptography encodes, byte for byte what ``CertificateBuilder.sign`` would make: it
  used to sign the builder with a throwaway "lint key" only to read the TBS back). The service
  persists that TBS (and may lint ``prepared.preview``, the TBS signed by the throwaway key,
  made when asked) *before* the real signature exists, so a crash never leaves a signed
  certificate the database does not know.
* :func:`sign` (and :func:`sign_der`, the DER without a parse) has the issuer's key (HSM or
  memory) sign the prepared TBS octets themselves and frames them with the prepared
  signatureAlgorithm (what the builder would ask the key for), so the certificate's TBS is the
  persisted one by construction, and verifies the signature (an HSM fault must not leave the
  building as a certificate).

Nothing here touches a database, a clock or the network: times, serials and URLs come in as
arguments. The package imports no flask, sqlalchemy or click (a test keeps it so).

One module per concern, each importing only those before it in this list, and this package
re-exports what callers use (``from ca import issuance; issuance.prepare(...)``):

* :mod:`~ca.issuance.signature`: the signature algorithm, the lint keys, framing, verifying;
* :mod:`~ca.issuance.request`: the inputs and outputs (IssuerInfo, CertificateRequest, Urls,
  PreparedCertificate) and the repository URL layout;
* :mod:`~ca.issuance.serials`: drawing and checking serial numbers;
* :mod:`~ca.issuance.keys`: the subscriber key's policy and the CSR's proof of possession;
* :mod:`~ca.issuance.encoding`: SPKI bytes, key identifiers and extensions read from
  certificates;
* :mod:`~ca.issuance.tbs`: the TBSCertificate DER, framed from parts cryptography encodes;
* :mod:`~ca.issuance.checks`: issuer, validity and subjectAltName checks;
* :mod:`~ca.issuance.qc_statements` and :mod:`~ca.issuance.extensions`: the extensions;
* :mod:`~ca.issuance.issue`: :func:`prepare` and :func:`sign`.
"""
from __future__ import annotations

from ca.issuance.issue import prepare, sign, sign_der
from ca.issuance.keys import MAX_CSR_BYTES, MIN_RSA_BITS, check_key, load_csr
from ca.issuance.qc_statements import qc_statements_der
from ca.issuance.request import (CertificateRequest, IssuerInfo, PreparedCertificate, Urls,
                                 urls_for)
from ca.issuance.serials import SERIAL_MAX_BITS, SERIAL_MIN_BITS, new_serial
from ca.issuance.signature import placeholder_public_key

__all__ = [
    "CertificateRequest", "IssuerInfo", "PreparedCertificate", "Urls", "check_key", "load_csr",
    "new_serial", "placeholder_public_key", "prepare", "sign", "sign_der", "urls_for",
    "qc_statements_der", "MAX_CSR_BYTES", "MIN_RSA_BITS", "SERIAL_MAX_BITS", "SERIAL_MIN_BITS",
]
