"""Certificate profiles: YAML data in profiles/, loaded into frozen, validated objects.

The data model below is the contract between the YAML files, issuance (ca/issuance.py) and the
service. Subject conventions (Vietnamese identity prefixes, ETSI attributes) live in the YAML, not
in code, because Circular 28/2025 may change them.

YAML schema (one profile per ``profiles/<name>.yaml``; every key but ``name`` optional, unknown
keys are errors)::

    name: clinician                 # must equal the file stem
    description: text
    extends: person-base            # inherit from another profile of the same directory
    abstract: false                 # true: a base for extends only, never issued from
    subject:                        # order = RDN order in the certificate
      - {name: C, required: true, value: VN}
      - {name: UID, required: true, max_count: 2, patterns: ['CCCD:\\d{12}', 'MST:\\d{10}']}
      - {name: CN, required: true, max_length: 64}
      # keys: name, oid (only for attributes ca/subject.py does not know), required, max_count,
      #       value (fixed; filled in when omitted), patterns (full-match regexes), max_length
    subject_remove: [OU]            # with extends: drop inherited attributes
    key_algorithms: [rsa-2048, ec-p256]       # KeySpec.parse syntax; required (non-abstract)
    signature: {hash: sha256, rsa_padding: pkcs1v15}   # sha256|sha384|sha512, pkcs1v15|pss
    validity: {default_days: 365, max_days: 1096}      # required (non-abstract)
    key_usage: [nonRepudiation]     # RFC 5280 names; required (non-abstract)
    key_usage_critical: true
    extended_key_usage: [serverAuth]   # names (serverAuth, clientAuth, codeSigning,
    extended_key_usage_critical: false #  emailProtection, timeStamping, OCSPSigning) or OIDs
    basic_constraints: {ca: true, path_length: 0, critical: true}   # omit for end entities
    policies: [{oid: 1.3.6.1.4.1.59999.1.1, cps_uri: 'https://...', user_notice: text}]
    authority_info_access: true     # OCSP + caIssuers
    crl_distribution_point: true
    freshest_crl: false
    email_san: forbidden            # forbidden | optional | required
    dns_san: forbidden
    qc_statements: {compliance: true, sscd: true, qc_type: esign,
                    pds: [{url: 'https://...', language: en}], legislation: [VN],
                    semantics: natural}
    ocsp_nocheck: false
    self_signed: false

Inheritance (``extends``): the child starts from the parent's *resolved* profile. ``name``,
``description``, ``abstract`` and ``extends`` are never inherited. Every other top-level key the
child gives replaces the parent's value wholesale (``validity: {max_days: 90}`` alone is an
error, not a partial override), except ``subject``: a child entry whose attribute the parent has
overrides that entry key by key, in the parent's position (so ``{name: serialNumber, required:
true}`` just makes it required); entries for new attributes are appended after the inherited
ones; ``subject_remove`` drops inherited attributes. Cycles and missing parents are errors.

Abstract profiles load and validate like others (minus the required keys), are listed by
:meth:`ProfileSet.abstract_names`, and are refused by :meth:`ProfileSet.get` unless asked for
with ``allow_abstract=True``; ``names()``, iteration, ``in`` and ``len`` see concrete profiles
only, because those are what an operator can issue from.

Every loading error is a :class:`ProfileError` naming the file, the profile and the field path,
e.g. ``profiles/clinician.yaml: profile clinician: subject[2].patterns[0]: invalid regex ...``.

The package keeps one concern per module: :mod:`~ca.profiles.model` the frozen dataclasses
issuance reads, :mod:`~ca.profiles.schema` the pydantic models of the YAML input,
:mod:`~ca.profiles.loader` YAML, inheritance and the rules spanning keys; pydantic's errors are
worded for the operator by :mod:`ca.validation`, which hierarchy specs and settings share.

Pure: imports no flask, sqlalchemy or click.
"""
from __future__ import annotations

from ca.profiles.loader import ProfileSet, check_profile_file, load_profiles
from ca.profiles.model import (EKU_NAMES, HASHES, KEY_USAGE_NAMES, QC_TYPES, RSA_PADDINGS,
                               SAN_POLICIES, SEMANTICS, BasicConstraintsRule, PolicyRule,
                               Profile, QcStatementsRule, SignatureRule, SubjectAttributeRule,
                               ValidityRule, profile_as_dict)

__all__ = ["BasicConstraintsRule", "EKU_NAMES", "HASHES", "KEY_USAGE_NAMES", "PolicyRule",
           "Profile", "ProfileSet", "QC_TYPES", "QcStatementsRule", "RSA_PADDINGS",
           "SAN_POLICIES", "SEMANTICS", "SignatureRule", "SubjectAttributeRule", "ValidityRule",
           "check_profile_file", "load_profiles", "profile_as_dict"]
