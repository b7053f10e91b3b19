"""ASN.1 structures cryptography does not model, declared as data with asn1crypto.

Today that is the ETSI EN 319 412-5 ``QCStatements`` extension (RFC 3739 syntax) and the
EN 319 412-1 semantics identifiers. Class names follow the standards so a reader can hold the
module next to the ASN.1 module in the spec. The OIDs are registered here and only here; nothing
is patched into asn1crypto's global maps, so parsing other people's certificates is unaffected.
"""
from __future__ import annotations

from asn1crypto import core
from asn1crypto import x509 as asn1_x509

# id-pe-qcStatements (RFC 3739): the extension that carries the statements.
ID_PE_QC_STATEMENTS = "1.3.6.1.5.5.7.1.3"

# EN 319 412-5 statement identifiers and QcType values; RFC 3739 pkixQCSyntax-v2.
ID_ETSI_QCS_QC_COMPLIANCE = "0.4.0.1862.1.1"
ID_ETSI_QCS_QC_SSCD = "0.4.0.1862.1.4"
ID_ETSI_QCS_QC_PDS = "0.4.0.1862.1.5"
ID_ETSI_QCS_QC_TYPE = "0.4.0.1862.1.6"
ID_ETSI_QCS_QC_CC_LEGISLATION = "0.4.0.1862.1.7"
ID_QCS_PKIX_QC_SYNTAX_V2 = "1.3.6.1.5.5.7.11.2"

QC_TYPES = {"esign": "0.4.0.1862.1.6.1", "eseal": "0.4.0.1862.1.6.2", "web": "0.4.0.1862.1.6.3"}

# EN 319 412-1 semantics identifiers for the subject's serialNumber / organizationIdentifier.
SEMANTICS = {"natural": "0.4.0.194121.1.1", "legal": "0.4.0.194121.1.2"}


class QcStatementId(core.ObjectIdentifier):
    _map = {
        ID_ETSI_QCS_QC_COMPLIANCE: "qc_compliance",
        ID_ETSI_QCS_QC_SSCD: "qc_sscd",
        ID_ETSI_QCS_QC_PDS: "qc_pds",
        ID_ETSI_QCS_QC_TYPE: "qc_type",
        ID_ETSI_QCS_QC_CC_LEGISLATION: "qc_cc_legislation",
        ID_QCS_PKIX_QC_SYNTAX_V2: "pkix_qc_syntax_v2",
    }


class PdsLocation(core.Sequence):
    """PdsLocation ::= SEQUENCE { url IA5String, language PrintableString (SIZE(2)) }"""

    _fields = [("url", core.IA5String), ("language", core.PrintableString)]


class PdsLocations(core.SequenceOf):
    _child_spec = PdsLocation


class QcTypeId(core.ObjectIdentifier):
    _map = {oid: f"qct_{name}" for name, oid in QC_TYPES.items()}


class QcType(core.SequenceOf):
    _child_spec = QcTypeId


class QcCClegislation(core.SequenceOf):
    """QcCClegislation ::= SEQUENCE OF CountryName (PrintableString SIZE(2))"""

    _child_spec = core.PrintableString


class SemanticsId(core.ObjectIdentifier):
    _map = {oid: f"semantics_{name}" for name, oid in SEMANTICS.items()}


class SemanticsInformation(core.Sequence):
    """RFC 3739: at least one of the two fields is present."""

    _fields = [
        ("semantics_identifier", SemanticsId, {"optional": True}),
        ("name_registration_authorities", asn1_x509.GeneralNames, {"optional": True}),
    ]


class QCStatement(core.Sequence):
    """QCStatement ::= SEQUENCE { statementId OID, statementInfo ANY DEFINED BY statementId OPTIONAL }"""

    _fields = [
        ("statement_id", QcStatementId),
        ("statement_info", core.Any, {"optional": True}),
    ]
    _oid_pair = ("statement_id", "statement_info")
    _oid_specs = {
        "qc_pds": PdsLocations,
        "qc_type": QcType,
        "qc_cc_legislation": QcCClegislation,
        "pkix_qc_syntax_v2": SemanticsInformation,
    }


class QCStatements(core.SequenceOf):
    _child_spec = QCStatement
