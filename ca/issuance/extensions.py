"""The X.509 extensions a profile asks for, built for one request and one issuer.

Always in one fixed order, so the same input gives the same DER: :func:`ca.issuance.sign`
refuses a signed TBS that differs from the prepared one by a single byte.
"""
from __future__ import annotations

import re

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from ca import asn1
from ca.errors import IssuanceError, ProfileError
from ca.issuance.encoding import extension_value, key_identifier
from ca.issuance.qc_statements import qc_statements_der
from ca.issuance.request import CertificateRequest, IssuerInfo, Urls
from ca.keys.base import KeySpec
from ca.profiles import Profile

# RFC 5280 KeyUsage bit names -> cryptography.x509.KeyUsage keyword arguments.
_KEY_USAGE_ARGS = {
    "digitalSignature": "digital_signature",
    "nonRepudiation": "content_commitment",
    "contentCommitment": "content_commitment",
    "keyEncipherment": "key_encipherment",
    "dataEncipherment": "data_encipherment",
    "keyAgreement": "key_agreement",
    "keyCertSign": "key_cert_sign",
    "cRLSign": "crl_sign",
    "encipherOnly": "encipher_only",
    "decipherOnly": "decipher_only",
}
# Bits a subject key of this family cannot honour: RSA encrypts, EC agrees, Ed25519 only signs.
_KEY_USAGE_IMPOSSIBLE = {
    "rsa": {"key_agreement", "encipher_only", "decipher_only"},
    "ec": {"key_encipherment", "data_encipherment"},
    "ed25519": {"key_encipherment", "data_encipherment", "key_agreement", "encipher_only",
                "decipher_only"},
}

_EKU_NAMES = {
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING,
    "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "timeStamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "OCSPSigning": ExtendedKeyUsageOID.OCSP_SIGNING,
}


def extensions(request: CertificateRequest, issuer: IssuerInfo, urls: Urls | None,
               subject_spec: KeySpec, self_signed: bool, emails: tuple[str, ...],
               dns_names: tuple[str, ...]) -> list[tuple[x509.ExtensionType, bool]]:
    """The profile's extensions and their criticality, in one fixed order."""
    profile = request.profile
    out: list[tuple[x509.ExtensionType, bool]] = []
    bc = profile.basic_constraints
    if bc is not None:
        out.append((x509.BasicConstraints(ca=bc.ca, path_length=bc.path_length if bc.ca else None),
                    bc.critical))
    key_usage = _key_usage(profile, subject_spec)
    if key_usage is not None:
        out.append((key_usage, profile.key_usage_critical))
    if profile.extended_key_usage:
        out.append((x509.ExtendedKeyUsage([_eku_oid(profile, e)
                                           for e in profile.extended_key_usage]),
                    profile.extended_key_usage_critical))
    ski = x509.SubjectKeyIdentifier(key_identifier(request.public_key))
    out.append((ski, False))
    if self_signed:
        # RFC 5280 lets a self-signed root omit AKI; keyIdentifier = SKI is what CA/B Forum
        # roots carry and it helps path builders, so keep it.
        out.append((x509.AuthorityKeyIdentifier(ski.digest, None, None), False))
    else:
        out.append((x509.AuthorityKeyIdentifier(_issuer_key_id(issuer), None, None), False))
    if emails or dns_names:
        names: list[x509.GeneralName] = [x509.RFC822Name(e) for e in emails]
        names += [x509.DNSName(d) for d in dns_names]
        out.append((x509.SubjectAlternativeName(names), not len(request.subject)))
    if profile.policies:
        out.append((_policies(profile), False))
    if urls is not None and not self_signed:
        if profile.crl_distribution_point and urls.crl:
            out.append((x509.CRLDistributionPoints([_dp(urls.crl)]), False))
        if profile.freshest_crl and urls.freshest_crl:
            out.append((x509.FreshestCRL([_dp(urls.freshest_crl)]), False))
        if profile.authority_info_access:
            access = []
            if urls.ocsp:
                access.append(x509.AccessDescription(x509.AuthorityInformationAccessOID.OCSP,
                                                     x509.UniformResourceIdentifier(urls.ocsp)))
            if urls.ca_issuers:
                access.append(x509.AccessDescription(
                    x509.AuthorityInformationAccessOID.CA_ISSUERS,
                    x509.UniformResourceIdentifier(urls.ca_issuers)))
            if access:
                out.append((x509.AuthorityInformationAccess(access), False))
    if profile.ocsp_nocheck:
        out.append((x509.OCSPNoCheck(), False))
    if profile.qc_statements is not None:
        out.append((x509.UnrecognizedExtension(ObjectIdentifier(asn1.ID_PE_QC_STATEMENTS),
                                               qc_statements_der(profile)), False))
    return out


def _key_usage(profile: Profile, subject_spec: KeySpec) -> x509.KeyUsage | None:
    """KeyUsage from the profile, without bits the subject key's family cannot honour.

    A profile lists keyEncipherment for RSA TLS keys; for an EC key the bit would be wrong, so it
    is dropped rather than making one profile per key family.
    """
    if not profile.key_usage:
        return None
    unknown = sorted(set(profile.key_usage) - set(_KEY_USAGE_ARGS))
    if unknown:
        raise ProfileError(f"profile {profile.name}: unknown keyUsage {', '.join(unknown)}")
    bits = {_KEY_USAGE_ARGS[name] for name in profile.key_usage}
    bits -= _KEY_USAGE_IMPOSSIBLE[subject_spec.algorithm]
    is_ca = profile.basic_constraints is not None and profile.basic_constraints.ca
    if "key_cert_sign" in bits and not is_ca:
        raise ProfileError(f"profile {profile.name}: keyCertSign needs basicConstraints cA")
    if not bits:
        raise IssuanceError(f"profile {profile.name}: no keyUsage of "
                            f"{sorted(profile.key_usage)} suits a {subject_spec} key")
    args = {name: name in bits for name in set(_KEY_USAGE_ARGS.values())}
    return x509.KeyUsage(**args)


def _eku_oid(profile: Profile, value: str) -> ObjectIdentifier:
    if value in _EKU_NAMES:
        return _EKU_NAMES[value]
    if not re.fullmatch(r"[0-2](\.\d+)+", value):
        raise ProfileError(f"profile {profile.name}: extended key usage {value!r} is not a "
                           "dotted OID")
    return ObjectIdentifier(value)


def _policies(profile: Profile) -> x509.CertificatePolicies:
    infos = []
    for rule in profile.policies:
        qualifiers: list[str | x509.UserNotice] = []
        if rule.cps_uri:
            qualifiers.append(rule.cps_uri)
        if rule.user_notice:
            if len(rule.user_notice) > 200:
                raise ProfileError(f"profile {profile.name}: user notice over 200 characters "
                                   "(RFC 5280 4.2.1.4)")
            qualifiers.append(x509.UserNotice(None, rule.user_notice))
        infos.append(x509.PolicyInformation(ObjectIdentifier(rule.oid), qualifiers or None))
    return x509.CertificatePolicies(infos)


def _dp(url: str) -> x509.DistributionPoint:
    return x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)


def _issuer_key_id(issuer: IssuerInfo) -> bytes:
    """AKI keyIdentifier: the issuer's own SKI when it has one, so the chain links exactly."""
    if issuer.certificate is None:
        raise IssuanceError(f"issuer {issuer.name} has no certificate to take an AKI from")
    ski = extension_value(issuer.certificate, x509.SubjectKeyIdentifier)
    if ski is not None:
        return ski.digest
    return key_identifier(issuer.certificate.public_key())  # type: ignore[arg-type]
