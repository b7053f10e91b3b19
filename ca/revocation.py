"""RFC 5280 5.3.1 revocation reasons: the names operators type, the store keeps (the RFC's own
camelCase) and asn1crypto encodes, in one table for the CLI, CRLs and OCSP."""
from __future__ import annotations

from ca.errors import IssuanceError

# RFC name -> asn1crypto CRLReason name. Code 7 is unused in the RFC.
ASN1_NAMES = {
    "unspecified": "unspecified", "keyCompromise": "key_compromise",
    "cACompromise": "ca_compromise", "affiliationChanged": "affiliation_changed",
    "superseded": "superseded", "cessationOfOperation": "cessation_of_operation",
    "certificateHold": "certificate_hold", "removeFromCRL": "remove_from_crl",
    "privilegeWithdrawn": "privilege_withdrawn", "aACompromise": "aa_compromise",
}
# What an operator may revoke with: removeFromCRL is a delta-CRL mechanism, not a reason.
OPERATOR_REASONS = tuple(name for name in ASN1_NAMES if name != "removeFromCRL")


def parse_reason(text: str) -> str:
    """The RFC name for what an operator typed: any case, with or without - or _."""
    folded = text.replace("-", "").replace("_", "").lower()
    for name in OPERATOR_REASONS:
        if name.lower() == folded:
            return name
    raise IssuanceError(f"revocation reason {text!r} is not one of {', '.join(OPERATOR_REASONS)}")
