"""Pure certificate construction: (profile, subject, public key, issuer) -> certificate.

Issuance is split in two steps, after Boulder's issuance package:

* :func:`prepare` checks the request against the profile and the issuer, builds the
  ``CertificateBuilder`` and computes the exact DER of the TBSCertificate the HSM will sign. It
  gets that DER by signing the builder once with a throwaway in-memory "lint key" of the same
  algorithm as the issuer's key: a TBSCertificate does not depend on key material, only on the
  signature algorithm identifier. The service persists that TBS (and may lint the preview
  certificate) *before* the real signature exists, so a crash never leaves a signed certificate
  the database does not know.
* :func:`sign` signs the same builder with the issuer's key (HSM or memory), checks that the TBS
  is byte-for-byte the one prepared, and verifies the signature (an HSM fault must not leave the
  building as a certificate).

Nothing here touches a database, a clock or the network: times, serials and URLs come in as
arguments. The module imports no flask, sqlalchemy or click (a test keeps it so).
"""
from __future__ import annotations

import hashlib
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from ca import asn1
from ca.clock import ensure_utc, truncate_seconds
from ca.errors import (CSRError, IssuanceError, KeyPolicyError, ProfileError,
                       UnsupportedKeyError)
from ca.keys.base import KeySpec, PrivateKey, PublicKey, SigningKey
from ca.keys.memory import generate_private_key
from ca.profiles import Profile

__all__ = [
    "CertificateRequest", "IssuerInfo", "PreparedCertificate", "Urls", "check_key", "load_csr",
    "new_serial", "placeholder_public_key", "prepare", "sign", "urls_for",
]

SERIAL_MAX_BITS = 159  # 20 octets, top bit clear: RFC 5280 4.1.2.2 positive, <= 20 octets
SERIAL_MIN_BITS = 64  # CA/Browser Forum: at least 64 bits of CSPRNG output
MIN_RSA_BITS = 2048  # Circular 15/2025: RSA >= 2048
MAX_CSR_BYTES = 64 * 1024

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}

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

_SAN_POLICIES = ("forbidden", "optional", "required")
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+$")


# --- inputs and outputs ---------------------------------------------------------------------

@dataclass(frozen=True)
class IssuerInfo:
    """Who signs: the CA's tincay name (used in URLs), its certificate and its signing key.

    ``certificate`` is None only while creating a self-signed root, whose subject is then also
    the issuer name.
    """

    name: str
    certificate: x509.Certificate | None
    key: SigningKey
    publishes_deltas: bool = False  # its certificates may then point at its delta CRL


@dataclass(frozen=True)
class Urls:
    """Where relying parties fetch status and the issuer certificate (AIA, CRL DP, freshestCRL)."""

    ocsp: str | None = None
    ca_issuers: str | None = None
    crl: str | None = None
    freshest_crl: str | None = None


def urls_for(public_url: str, issuer_name: str, *, deltas: bool = False) -> Urls:
    """The repository layout tincay serves under one public base URL, for one issuing CA.

    ``{base}/ocsp``, ``{base}/certs/{ca}.cer``, ``{base}/crl/{ca}.crl`` and
    ``{base}/crl/{ca}-delta.crl`` (only for a CA that publishes delta CRLs, so no certificate
    points at a CRL that will never exist); one function so the HTTP routes and the
    certificates agree.
    """
    base = public_url.rstrip("/")
    if not re.match(r"^https?://[^/\s]+", base):
        raise ValueError(f"public URL {public_url!r} must be an absolute http(s) URL")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", issuer_name):
        raise ValueError(f"CA name {issuer_name!r} is not safe in a URL path")
    return Urls(ocsp=f"{base}/ocsp", ca_issuers=f"{base}/certs/{issuer_name}.cer",
                crl=f"{base}/crl/{issuer_name}.crl",
                freshest_crl=f"{base}/crl/{issuer_name}-delta.crl" if deltas else None)


@dataclass(frozen=True)
class CertificateRequest:
    """What to certify. ``subject`` is already validated against the profile (ca/subject.py).

    ``not_after`` defaults to the profile's default validity; validity periods are inclusive
    (RFC 5280 4.1.2.5), so N days end one second before ``not_before + N days``.
    """

    profile: Profile
    subject: x509.Name
    public_key: PublicKey
    serial: int
    not_before: datetime
    not_after: datetime | None = None
    emails: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class PreparedCertificate:
    """A checked, fully built certificate that is not signed yet.

    ``tbs_der`` is the exact TBSCertificate :func:`sign` will produce; persist it before signing.
    ``preview`` is the same TBS signed by a throwaway key, for linting before the real signature.
    """

    builder: x509.CertificateBuilder
    tbs_der: bytes
    preview: x509.Certificate
    serial: int
    not_before: datetime
    not_after: datetime
    profile_name: str
    issuer_name: str
    issuer_spki: bytes
    hash_algorithm: hashes.HashAlgorithm | None
    rsa_padding: padding.AsymmetricPadding | None

    @property
    def serial_hex(self) -> str:
        """Lower-case hex without leading zeros: how the store and logs name a certificate."""
        return format(self.serial, "x")


# --- serials, keys and CSRs -----------------------------------------------------------------

def new_serial() -> int:
    """A fresh serial: 159 bits from the OS CSPRNG, so positive and at most 20 DER octets.

    Redrawn in the (2**-95) case that fewer than 64 significant bits came out, so every serial
    also passes the minimum-entropy check in :func:`prepare`.
    """
    while True:
        serial = secrets.randbits(SERIAL_MAX_BITS)
        if serial.bit_length() >= SERIAL_MIN_BITS:
            return serial


def check_key(profile: Profile, public_key: PublicKey) -> KeySpec:
    """The subscriber key's spec, if the profile allows it; KeyPolicyError otherwise.

    A profile without a key list still refuses what no tincay certificate may carry: RSA below
    2048 bits or with a bad exponent, unknown curves, other algorithms.
    """
    try:
        spec = KeySpec.of_public_key(public_key)
    except UnsupportedKeyError as exc:
        raise KeyPolicyError(f"profile {profile.name}: {exc}") from None
    if isinstance(public_key, rsa.RSAPublicKey):
        exponent = public_key.public_numbers().e
        if public_key.key_size < MIN_RSA_BITS:
            raise KeyPolicyError(
                f"profile {profile.name}: RSA key of {public_key.key_size} bits is too small "
                f"(minimum {MIN_RSA_BITS})")
        if exponent < 65537 or exponent % 2 == 0:
            raise KeyPolicyError(
                f"profile {profile.name}: RSA public exponent {exponent} is not allowed")
    if not profile.allows_key(spec):
        allowed = ", ".join(str(s) for s in profile.key_algorithms)
        raise KeyPolicyError(
            f"profile {profile.name} does not allow {spec} keys (allowed: {allowed})")
    return spec


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Parse a PKCS#10 request (PEM or DER) and insist its self-signature verifies.

    The signature proves the requester holds the private key; without it anyone could get a
    certificate for someone else's public key.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError("load_csr expects bytes")
    if len(data) > MAX_CSR_BYTES:
        raise CSRError(f"CSR of {len(data)} bytes exceeds the {MAX_CSR_BYTES}-byte limit")
    try:
        if bytes(data).lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(bytes(data))
        else:
            csr = x509.load_der_x509_csr(bytes(data))
    except ValueError as exc:
        raise CSRError(f"CSR does not parse: {exc}") from None
    try:
        valid = csr.is_signature_valid
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise CSRError(f"CSR signature cannot be checked: {exc}") from None
    if not valid:
        raise CSRError("CSR signature does not verify: the requester did not prove possession "
                       "of the private key, or the request was altered")
    return csr


# --- signature algorithm and lint keys ------------------------------------------------------

def _signature_params(profile: Profile, issuer_spec: KeySpec
                      ) -> tuple[hashes.HashAlgorithm | None, padding.AsymmetricPadding | None]:
    """Hash and padding for the issuer's key family; the profile picks hash and RSA padding."""
    if issuer_spec.algorithm == "ed25519":
        return None, None
    hash_cls = _HASHES.get(profile.signature.hash)
    if hash_cls is None:
        raise ProfileError(f"profile {profile.name}: signature hash {profile.signature.hash!r} "
                           f"is not one of {sorted(_HASHES)}")
    algorithm = hash_cls()
    if issuer_spec.algorithm == "ec":
        return algorithm, None
    if profile.signature.rsa_padding == "pkcs1v15":
        return algorithm, padding.PKCS1v15()
    if profile.signature.rsa_padding == "pss":
        # RFC 4055: MGF1 with the same hash, salt as long as the digest.
        return algorithm, padding.PSS(mgf=padding.MGF1(hash_cls()),
                                      salt_length=padding.PSS.DIGEST_LENGTH)
    raise ProfileError(f"profile {profile.name}: rsa_padding {profile.signature.rsa_padding!r} "
                       "is not pkcs1v15 or pss")


_LINT_KEYS: dict[KeySpec, PrivateKey] = {}
_LINT_KEYS_LOCK = threading.Lock()


def _lint_key(spec: KeySpec) -> PrivateKey:
    """A process-local throwaway key per spec; RSA generation is slow, so keep them."""
    with _LINT_KEYS_LOCK:
        key = _LINT_KEYS.get(spec)
        if key is None:
            key = _LINT_KEYS[spec] = generate_private_key(spec)
        return key


def placeholder_public_key(spec: KeySpec) -> PublicKey:
    """A throwaway public key of ``spec``, to dry-run :func:`prepare` before an HSM key exists.

    Generating a subscriber key on an HSM is a side effect; checking the request first means a
    typo in the subject or validity never leaves an orphaned key on the token.
    """
    return _lint_key(spec).public_key()


def _sign_builder(builder: x509.CertificateBuilder, key: PrivateKey,
                  algorithm: hashes.HashAlgorithm | None,
                  rsa_padding: padding.AsymmetricPadding | None) -> x509.Certificate:
    if rsa_padding is not None:
        return builder.sign(key, algorithm, rsa_padding=rsa_padding)  # type: ignore[arg-type]
    return builder.sign(key, algorithm)  # type: ignore[arg-type]


# --- prepare and sign -----------------------------------------------------------------------

def prepare(request: CertificateRequest, issuer: IssuerInfo,
            urls: Urls | None) -> PreparedCertificate:
    """Check the request against its profile and issuer and build the unsigned certificate.

    Raises IssuanceError (KeyPolicyError, ...) for anything an operator or requester can fix;
    ProfileError when the profile itself is inconsistent.
    """
    profile = request.profile
    self_signed = _check_issuer(profile, issuer, request)
    issuer_spec = issuer.key.spec
    subject_spec = check_key(profile, request.public_key)
    _check_serial(request.serial)
    not_before, not_after = _validity(request, issuer)
    emails = _check_emails(profile, request.emails)
    dns_names = _check_dns_names(profile, request.dns_names)
    if not len(request.subject) and not (emails or dns_names):
        raise IssuanceError(f"profile {profile.name}: an empty subject needs a subjectAltName")
    algorithm, rsa_padding = _signature_params(profile, issuer_spec)

    issuer_name = request.subject if self_signed else _issuer_name(issuer)
    builder = (x509.CertificateBuilder()
               .subject_name(request.subject)
               .issuer_name(issuer_name)
               .public_key(request.public_key)
               .serial_number(request.serial)
               .not_valid_before(not_before)
               .not_valid_after(not_after))
    for extension, critical in _extensions(request, issuer, urls, subject_spec, self_signed,
                                           emails, dns_names):
        builder = builder.add_extension(extension, critical=critical)

    preview = _sign_builder(builder, _lint_key(issuer_spec), algorithm, rsa_padding)
    return PreparedCertificate(
        builder=builder, tbs_der=preview.tbs_certificate_bytes, preview=preview,
        serial=request.serial, not_before=not_before, not_after=not_after,
        profile_name=profile.name, issuer_name=issuer.name,
        issuer_spki=_spki(issuer.key.public_key), hash_algorithm=algorithm,
        rsa_padding=rsa_padding)


def sign(prepared: PreparedCertificate, issuer: IssuerInfo) -> x509.Certificate:
    """Sign exactly what :func:`prepare` built, with the issuer's real (HSM or memory) key.

    Refuses a different issuer key, a TBS that differs from ``prepared.tbs_der`` (what the
    service persisted) and a signature that does not verify. Key backend errors propagate.
    """
    if _spki(issuer.key.public_key) != prepared.issuer_spki:
        raise IssuanceError(f"certificate {prepared.serial_hex} was prepared for another issuer "
                            f"key than {issuer.key.uri}")
    cert = _sign_builder(prepared.builder, issuer.key.private_key, prepared.hash_algorithm,
                         prepared.rsa_padding)
    if cert.tbs_certificate_bytes != prepared.tbs_der:
        raise IssuanceError(f"certificate {prepared.serial_hex}: the signed TBSCertificate "
                            "differs from the prepared one; refusing to hand it out")
    try:
        _verify_signature(cert, issuer.key.public_key)
    except InvalidSignature:
        raise IssuanceError(f"certificate {prepared.serial_hex}: the signature made by "
                            f"{issuer.key.uri} does not verify") from None
    return cert


# --- checks ---------------------------------------------------------------------------------

def _check_issuer(profile: Profile, issuer: IssuerInfo, request: CertificateRequest) -> bool:
    """Whether this is a self-signed certificate; refuse issuers that may not sign it."""
    new_bc = profile.basic_constraints
    if issuer.certificate is None:
        if not profile.self_signed:
            raise IssuanceError(f"profile {profile.name} is not self-signed: issuer "
                                f"{issuer.name} needs a certificate")
        if _spki(request.public_key) != _spki(issuer.key.public_key):
            raise IssuanceError(f"self-signed {profile.name}: the certified key is not the "
                                f"signing key {issuer.key.uri}")
        if new_bc is None or not new_bc.ca:
            raise ProfileError(f"profile {profile.name}: a self-signed root must be a CA")
        return True
    if profile.self_signed:
        raise IssuanceError(f"profile {profile.name} is self-signed but issuer {issuer.name} "
                            "has a certificate")
    cert = issuer.certificate
    if _spki(cert.public_key()) != _spki(issuer.key.public_key):
        raise IssuanceError(f"issuer {issuer.name}: key {issuer.key.uri} does not match the "
                            "issuer certificate")
    bc = _extension_value(cert, x509.BasicConstraints)
    if bc is None or not bc.ca:
        raise IssuanceError(f"issuer {issuer.name} is not a CA (basicConstraints cA is false)")
    ku = _extension_value(cert, x509.KeyUsage)
    if ku is not None and not ku.key_cert_sign:
        raise IssuanceError(f"issuer {issuer.name} may not sign certificates "
                            "(keyUsage lacks keyCertSign)")
    if new_bc is not None and new_bc.ca and bc.path_length is not None:
        if bc.path_length == 0:
            raise IssuanceError(f"issuer {issuer.name} has pathLenConstraint 0: it may not "
                                f"issue CA certificates ({profile.name})")
        if new_bc.path_length is None or new_bc.path_length > bc.path_length - 1:
            raise IssuanceError(
                f"profile {profile.name} asks pathLenConstraint {new_bc.path_length}, but "
                f"issuer {issuer.name} (pathLenConstraint {bc.path_length}) allows at most "
                f"{bc.path_length - 1}")
    return False


def _check_serial(serial: int) -> None:
    if isinstance(serial, bool) or not isinstance(serial, int):
        raise TypeError("serial must be an int")
    if serial <= 0:
        raise IssuanceError(f"serial {serial} must be positive (RFC 5280 4.1.2.2)")
    if serial.bit_length() > SERIAL_MAX_BITS:
        raise IssuanceError(f"serial {serial:x} does not fit in 20 octets (RFC 5280 4.1.2.2)")
    if serial.bit_length() < SERIAL_MIN_BITS:
        raise IssuanceError(f"serial {serial:x} has fewer than {SERIAL_MIN_BITS} significant "
                            "bits: use new_serial()")


def _validity(request: CertificateRequest, issuer: IssuerInfo) -> tuple[datetime, datetime]:
    """Whole-second UTC times within the profile's maximum and the issuer's own validity."""
    profile = request.profile
    not_before = truncate_seconds(ensure_utc(request.not_before))
    if request.not_after is None:
        not_after = not_before + timedelta(days=profile.validity.default_days, seconds=-1)
    else:
        not_after = truncate_seconds(ensure_utc(request.not_after))
    if not_after <= not_before:
        raise IssuanceError(f"notAfter {not_after.isoformat()} is not after notBefore "
                            f"{not_before.isoformat()}")
    period = not_after - not_before + timedelta(seconds=1)  # RFC 5280: inclusive
    if period > timedelta(days=profile.validity.max_days):
        raise IssuanceError(
            f"validity {not_before.isoformat()} .. {not_after.isoformat()} exceeds the "
            f"{profile.validity.max_days} days profile {profile.name} allows")
    if issuer.certificate is not None:
        issuer_end = issuer.certificate.not_valid_after_utc
        if not_after > issuer_end:
            raise IssuanceError(
                f"notAfter {not_after.isoformat()} is later than the notAfter "
                f"{issuer_end.isoformat()} of issuer {issuer.name}; shorten the validity or "
                "renew the issuer")
    return not_before, not_after


def _check_presence(profile: Profile, kind: str, policy: str, values: tuple[str, ...]) -> None:
    if policy not in _SAN_POLICIES:
        raise ProfileError(f"profile {profile.name}: {kind}_san {policy!r} is not one of "
                           f"{_SAN_POLICIES}")
    if policy == "forbidden" and values:
        raise IssuanceError(f"profile {profile.name} does not allow {kind} subjectAltNames")
    if policy == "required" and not values:
        raise IssuanceError(f"profile {profile.name} requires at least one {kind} "
                            "subjectAltName")


def _check_emails(profile: Profile, emails: tuple[str, ...]) -> tuple[str, ...]:
    emails = tuple(emails)
    _check_presence(profile, "email", profile.email_san, emails)
    for email in emails:
        if not _EMAIL.match(email) or ".." in email.split("@", 1)[1]:
            raise IssuanceError(f"{email!r} is not an ASCII e-mail address (rfc822Name)")
    return tuple(dict.fromkeys(emails))


def _check_dns_names(profile: Profile, names: tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(names)
    _check_presence(profile, "dns", profile.dns_san, names)
    checked = []
    for name in names:
        lowered = name.lower().rstrip(".")
        labels = lowered.split(".")
        if labels[0] == "*":
            labels = labels[1:]
        if (len(lowered) > 253 or len(labels) < 2
                or not all(_DNS_LABEL.match(label) for label in labels)):
            raise IssuanceError(f"{name!r} is not a DNS name in ASCII (A-label) form")
        checked.append(lowered)
    return tuple(dict.fromkeys(checked))


# --- extensions -----------------------------------------------------------------------------

def _extensions(request: CertificateRequest, issuer: IssuerInfo, urls: Urls | None,
                subject_spec: KeySpec, self_signed: bool, emails: tuple[str, ...],
                dns_names: tuple[str, ...]) -> list[tuple[x509.ExtensionType, bool]]:
    """The profile's extensions, in one fixed order so the same input gives the same DER."""
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
    ski = x509.SubjectKeyIdentifier(_key_identifier(request.public_key))
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


# --- small helpers --------------------------------------------------------------------------

def _spki(public_key: PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _key_identifier(public_key: PublicKey) -> bytes:
    """RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING's value."""
    spki = asn1_keys.PublicKeyInfo.load(_spki(public_key))
    return hashlib.sha1(spki["public_key"].contents[1:]).digest()  # skip the unused-bits octet


def _issuer_name(issuer: IssuerInfo) -> x509.Name:
    """The issuer certificate's subject, refused unless it re-encodes to the very same bytes.

    Path builders match names byte for byte in practice; an imported CA certificate with an
    unusual encoding (unsorted multi-valued RDN, odd string type) must not silently break chains.
    """
    if issuer.certificate is None:
        raise IssuanceError(f"issuer {issuer.name} has no certificate")
    name = issuer.certificate.subject
    raw = asn1_x509.Certificate.load(
        issuer.certificate.public_bytes(serialization.Encoding.DER))["tbs_certificate"]["subject"]
    if name.public_bytes() != raw.dump():
        raise IssuanceError(f"issuer {issuer.name}: its subject name does not re-encode "
                            "byte-exactly; certificates would not chain to it")
    return name


def _issuer_key_id(issuer: IssuerInfo) -> bytes:
    """AKI keyIdentifier: the issuer's own SKI when it has one, so the chain links exactly."""
    if issuer.certificate is None:
        raise IssuanceError(f"issuer {issuer.name} has no certificate to take an AKI from")
    ski = _extension_value(issuer.certificate, x509.SubjectKeyIdentifier)
    if ski is not None:
        return ski.digest
    return _key_identifier(issuer.certificate.public_key())  # type: ignore[arg-type]


def _extension_value(cert: x509.Certificate, ext_type: type) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(ext_type).value
    except x509.ExtensionNotFound:
        return None


def _verify_signature(cert: x509.Certificate, public_key: PublicKey) -> None:
    signature, tbs = cert.signature, cert.tbs_certificate_bytes
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, tbs, cert.signature_algorithm_parameters,  # type: ignore[arg-type]
                          cert.signature_hash_algorithm)  # type: ignore[arg-type]
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, tbs, cert.signature_algorithm_parameters)  # type: ignore[arg-type]
    elif isinstance(public_key, ed25519.Ed25519PublicKey):
        public_key.verify(signature, tbs)
    else:  # pragma: no cover - KeySpec admits no other family
        raise IssuanceError(f"cannot verify a signature by {type(public_key).__name__}")

