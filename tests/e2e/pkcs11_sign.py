"""A signing application as a hospital's EMR would run it: pyHanko signs a PDF with a key on a
PKCS#11 token, takes the signature timestamp from a TSA and embeds the revocation data it
fetches (PAdES B-LT). Run as its own process, as a real signer is: SoftHSM must not see two
processes' sessions from one (DESIGN.md section 5), and the served PKI signs with its own.

    python -m tests.e2e.pkcs11_sign MODULE TOKEN KEY_LABEL CERT ROOT TSA_URL IN OUT FIELD \\
        [INTERMEDIATE ...]

The PIN comes from TINCAY_PKCS11_PIN, never from argv. Prints the signed file's path.
"""
from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    from pyhanko.config.pkcs11 import TokenCriteria
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers
    from pyhanko.sign.pkcs11 import PKCS11Signer, open_pkcs11_session
    from pyhanko.sign.timestamps import HTTPTimeStamper
    from pyhanko.keys import load_cert_from_pemder
    from pyhanko_certvalidator import ValidationContext

    module, token, key_label, cert, root, tsa_url, source, target, field, *chain = argv
    session = open_pkcs11_session(module, token_criteria=TokenCriteria(label=token),
                                  user_pin=os.environ["TINCAY_PKCS11_PIN"])
    try:
        # SoftHSM 2.6 offers CKM_ECDSA, not CKM_ECDSA_SHA256: hash here, sign the digest there
        signer = PKCS11Signer(session, key_label=key_label,
                              signing_cert=load_cert_from_pemder(cert),
                              ca_chain=[load_cert_from_pemder(c) for c in chain],
                              use_raw_mechanism=True)
        trust = ValidationContext(trust_roots=[load_cert_from_pemder(root)],
                                  allow_fetching=True, revocation_mode="require")
        metadata = signers.PdfSignatureMetadata(
            field_name=field, subfilter=fields.SigSeedSubFilter.PADES,
            embed_validation_info=True, validation_context=trust)
        with open(source, "rb") as infile, open(target, "wb") as outfile:
            signers.sign_pdf(IncrementalPdfFileWriter(infile, strict=False), metadata,
                             signer=signer, timestamper=HTTPTimeStamper(tsa_url),
                             output=outfile)
    finally:
        session.close()
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
