"""Throwaway hierarchies for test suites, from the same specs and profiles production uses.

    from ca.testing import Hierarchy

    with Hierarchy.from_spec() as pki:              # the demo spec, in-memory keys and database
        doctor = pki.issue("clinician", "C=VN, O=Bệnh viện Quận 11, CN=Nguyễn Văn A, "
                                        "UID=CCCD:079073009568")
        with pki.serve() as url: ...                # OCSP, TSA, CRLs on loopback

``hierarchy`` builds and drives the PKI, ``serving`` puts it on HTTP, ``pytest_plugin`` (the
``pytest11`` entry point ``tincay``) hands it to tests as fixtures.
"""
from ca.testing.hierarchy import DEMO_SPEC, PKCS12_PASSWORD, Hierarchy, Issued, Subject

__all__ = ["DEMO_SPEC", "PKCS12_PASSWORD", "Hierarchy", "Issued", "Subject"]
