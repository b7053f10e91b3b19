"""The two steps of issuance (after Boulder's issuance package): prepare, then sign exactly
what was prepared.

Between the two, the service persists the TBSCertificate (and may lint the preview), so a
crash never leaves a signed certificate the database does not know; :func:`sign` then refuses
anything but a byte-for-byte signature over that TBS.
"""
from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ca.errors import IssuanceError
from ca.issuance.checks import (check_dns_names, check_emails, check_issuer, issuer_name,
                                validity)
from ca.issuance.encoding import kept_spki
from ca.issuance.extensions import extensions
from ca.issuance.keys import check_key
from ca.issuance.request import CertificateRequest, IssuerInfo, PreparedCertificate, Urls
from ca.issuance.serials import check_serial
from ca.issuance.signature import check_signature, frame, sign_data, signature_params
from ca.issuance.tbs import algorithm_identifier, tbs_der


def prepare(request: CertificateRequest, issuer: IssuerInfo,
            urls: Urls | None) -> PreparedCertificate:
    """Check the request against its profile and issuer and build the unsigned certificate.

    Raises IssuanceError (KeyPolicyError, ...) for anything an operator or requester can fix;
    ProfileError when the profile itself is inconsistent.
    """
    profile = request.profile
    self_signed = check_issuer(profile, issuer, request)
    issuer_spec = issuer.key.spec
    subject_spec = check_key(profile, request.public_key)
    check_serial(request.serial)
    not_before, not_after = validity(request, issuer)
    emails = check_emails(profile, request.emails)
    dns_names = check_dns_names(profile, request.dns_names)
    if not len(request.subject) and not (emails or dns_names):
        raise IssuanceError(f"profile {profile.name}: an empty subject needs a subjectAltName")
    algorithm, rsa_padding = signature_params(profile, issuer_spec)

    name = request.subject if self_signed else issuer_name(issuer)
    algorithm_der = algorithm_identifier(issuer_spec, algorithm, rsa_padding)
    tbs = tbs_der(request.subject, name, request.public_key, request.serial, not_before,
                  not_after, extensions(request, issuer, urls, subject_spec, self_signed,
                                        emails, dns_names), algorithm_der)
    return PreparedCertificate(
        tbs_der=tbs, algorithm_der=algorithm_der, issuer_spec=issuer_spec,
        serial=request.serial, not_before=not_before, not_after=not_after,
        profile_name=profile.name, issuer_name=issuer.name,
        issuer_spki=kept_spki(issuer.key.public_key), hash_algorithm=algorithm,
        rsa_padding=rsa_padding)


def sign(prepared: PreparedCertificate, issuer: IssuerInfo) -> x509.Certificate:
    """Sign exactly what :func:`prepare` built, with the issuer's real (HSM or memory) key:
    :func:`sign_der`, parsed."""
    return x509.load_der_x509_certificate(sign_der(prepared, issuer))


def sign_der(prepared: PreparedCertificate, issuer: IssuerInfo) -> bytes:
    """The DER of the certificate :func:`prepare` built, signed by the issuer's real key.

    The key signs the persisted TBSCertificate octets themselves (what
    ``CertificateBuilder.sign`` would ask it for), framed with the prepared
    signatureAlgorithm, so the certificate's TBS is ``prepared.tbs_der`` by construction.
    Refuses a different issuer key and a signature that does not verify under the issuer's
    public key (an HSM fault). Key backend errors propagate.
    """
    if kept_spki(issuer.key.public_key) != prepared.issuer_spki:
        raise IssuanceError(f"certificate {prepared.serial_hex} was prepared for another issuer "
                            f"key than {issuer.key.uri}")
    signature = sign_data(issuer.key.private_key, prepared.tbs_der, prepared.hash_algorithm,
                          prepared.rsa_padding)
    try:
        check_signature(issuer.key.public_key, signature, prepared.tbs_der,
                        prepared.hash_algorithm, prepared.rsa_padding)
    except InvalidSignature:
        raise IssuanceError(f"certificate {prepared.serial_hex}: the signature made by "
                            f"{issuer.key.uri} does not verify") from None
    return frame(prepared.tbs_der, prepared.algorithm_der, signature)
