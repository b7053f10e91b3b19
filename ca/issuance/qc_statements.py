"""The QCStatements extension (ETSI EN 319 412-5) of qualified certificates under eIDAS-like
regimes: a profile's ``qc_statements`` rule, checked and encoded to DER.

cryptography has no type for it, so it is built with asn1crypto (ca/asn1.py) and added as an
unrecognised extension.
"""
from __future__ import annotations

import re

from ca import asn1
from ca.errors import ProfileError
from ca.profiles import Profile


def qc_statements_der(profile: Profile) -> bytes:
    """DER of the QCStatements extension value the profile describes (EN 319 412-5)."""
    rule = profile.qc_statements
    if rule is None:
        raise ProfileError(f"profile {profile.name} has no QC statements")
    statements: list[dict] = []
    if rule.semantics is not None:
        if rule.semantics not in asn1.SEMANTICS:
            raise ProfileError(f"profile {profile.name}: semantics {rule.semantics!r} is not "
                               f"one of {sorted(asn1.SEMANTICS)}")
        statements.append({"statement_id": "pkix_qc_syntax_v2", "statement_info":
                           asn1.SemanticsInformation(
                               {"semantics_identifier": asn1.SEMANTICS[rule.semantics]})})
    if rule.compliance:
        statements.append({"statement_id": "qc_compliance"})
    if rule.legislation:
        for country in rule.legislation:
            if not re.fullmatch(r"[A-Z]{2}", country):
                raise ProfileError(f"profile {profile.name}: legislation {country!r} is not an "
                                   "ISO 3166 alpha-2 code")
        statements.append({"statement_id": "qc_cc_legislation",
                           "statement_info": asn1.QcCClegislation(list(rule.legislation))})
    if rule.sscd:
        statements.append({"statement_id": "qc_sscd"})
    if rule.qc_type is not None:
        if rule.qc_type not in asn1.QC_TYPES:
            raise ProfileError(f"profile {profile.name}: qc_type {rule.qc_type!r} is not one "
                               f"of {sorted(asn1.QC_TYPES)}")
        statements.append({"statement_id": "qc_type",
                           "statement_info": asn1.QcType([asn1.QC_TYPES[rule.qc_type]])})
    if rule.pds:
        for url, language in rule.pds:
            if not url.startswith("https://") or not re.fullmatch(r"[a-z]{2}", language):
                raise ProfileError(f"profile {profile.name}: PDS ({url!r}, {language!r}) needs "
                                   "an https URL and a two-letter ISO 639-1 language")
        statements.append({"statement_id": "qc_pds", "statement_info": asn1.PdsLocations(
            [{"url": url, "language": language} for url, language in rule.pds])})
    if not statements:
        raise ProfileError(f"profile {profile.name}: qc_statements is empty")
    return asn1.QCStatements(statements).dump()
