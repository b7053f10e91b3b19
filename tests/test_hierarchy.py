"""Hierarchy specs (ca/hierarchy.py) and the shipped demo hierarchy.

The demo is also issued here, with in-memory keys through ca.issuance, so a spec that loads is
known to produce a chain that verifies.
"""
from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from cryptography import x509

from ca import issuance
from ca.errors import ProfileError
from ca.hierarchy import AuthoritySpec, HierarchySpec, ServiceSpec, load_hierarchy
from ca.issuance import CertificateRequest, IssuerInfo
from ca.keys.base import KeySpec
from ca.keys.memory import MemoryBackend
from ca.profiles import ProfileSet, load_profiles
from ca.subject import build_name

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "profiles" / "hierarchies" / "demo.yaml"
NOW = dt.datetime(2026, 11, 24, 8, 0, 0, tzinfo=dt.timezone.utc)
HOSPITAL = "Bệnh viện Đa khoa Tincay"


@pytest.fixture(scope="module")
def profiles() -> ProfileSet:
    return load_profiles(ROOT / "profiles")


def spec() -> dict[str, Any]:
    """A small valid spec as a mapping; tests break one field at a time."""
    return {
        "name": "t",
        "authorities": [
            {"name": "sub", "parent": "root", "profile": "issuing-ca", "key": "ec-p256",
             "subject": f"C=VN, O={HOSPITAL}, CN=Sub CA"},
            {"name": "root", "profile": "root-ca", "key": "ec-p384",
             "subject": [{"C": "VN"}, {"O": "Tincay"}, {"CN": "Root CA"}],
             "validity_days": 7300},
        ],
        "services": [
            {"name": "ocsp-sub", "kind": "ocsp", "issuer": "sub", "profile": "ocsp-responder",
             "key": "ec-p256", "subject": [{"CN": "OCSP"}, {"O": HOSPITAL}]},
            {"name": "tsa", "kind": "tsa", "issuer": "sub", "profile": "tsa", "key": "rsa-2048",
             "subject": "C=VN, O=Tincay, CN=TSA", "validity_days": 1000},
        ],
    }


def test_demo_hierarchy(profiles: ProfileSet) -> None:
    demo = load_hierarchy(DEMO, profiles)
    assert isinstance(demo, HierarchySpec)
    assert demo.name == "demo" and demo.source == DEMO
    root, issuing = demo.authorities
    assert root == AuthoritySpec("root-ca", "root-ca", KeySpec("ec", curve="P-256"),
                                 (("C", "VN"), ("O", "Tincay Demo"),
                                  ("CN", "Tincay Demo Root CA")), None, None)
    assert issuing.parent == "root-ca" and issuing.profile == "issuing-ca"
    assert ("O", HOSPITAL) in issuing.subject
    assert [(s.name, s.kind, s.issuer, s.profile) for s in demo.services] == [
        ("ocsp-issuing-ca", "ocsp", "issuing-ca", "ocsp-responder"),
        ("tsa", "tsa", "issuing-ca", "tsa")]
    assert all(isinstance(s, ServiceSpec) for s in demo.services)
    assert demo.authority("issuing-ca") is issuing
    with pytest.raises(ProfileError, match="no authority 'x'"):
        demo.authority("x")


def test_demo_hierarchy_issues_a_valid_chain(profiles: ProfileSet) -> None:
    """Every CA and unit of the demo, issued in spec order, chains to the root."""
    demo = load_hierarchy(DEMO, profiles)
    backend = MemoryBackend()
    issuers: dict[str, IssuerInfo] = {}
    certs: dict[str, x509.Certificate] = {}

    def issue(name: str, profile_name: str, key_spec: KeySpec, pairs, issuer: IssuerInfo | None,
              days: int | None) -> x509.Certificate:
        profile = profiles.get(profile_name)
        key = backend.generate(name, key_spec)
        issuer = issuer or IssuerInfo(name, None, key)
        not_after = NOW + dt.timedelta(days=days, seconds=-1) if days else None
        request = CertificateRequest(profile, build_name(profile, pairs), key.public_key,
                                     issuance.new_serial(), NOW, not_after)
        prepared = issuance.prepare(request, issuer,
                                    issuance.urls_for("https://pki.example.vn", issuer.name))
        cert = issuance.sign(prepared, issuer)
        issuers[name] = IssuerInfo(name, cert, key)
        return cert

    for authority in demo.authorities:
        parent = issuers[authority.parent] if authority.parent else None
        certs[authority.name] = issue(authority.name, authority.profile, authority.key,
                                      authority.subject, parent, authority.validity_days)
    for unit in demo.services:
        certs[unit.name] = issue(unit.name, unit.profile, unit.key, unit.subject,
                                 issuers[unit.issuer], unit.validity_days)
    certs["root-ca"].verify_directly_issued_by(certs["root-ca"])
    certs["issuing-ca"].verify_directly_issued_by(certs["root-ca"])
    for unit in ("ocsp-issuing-ca", "tsa"):
        certs[unit].verify_directly_issued_by(certs["issuing-ca"])
    ocsp = certs["ocsp-issuing-ca"]
    assert ocsp.not_valid_after_utc - ocsp.not_valid_before_utc == dt.timedelta(days=92,
                                                                                seconds=-1)
    org = certs["issuing-ca"].subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    assert org[0].value == HOSPITAL


def test_parents_come_first_and_subjects_are_pairs(profiles: ProfileSet) -> None:
    hierarchy = load_hierarchy(spec(), profiles)
    assert hierarchy.source is None and hierarchy.name == "t"
    assert [a.name for a in hierarchy.authorities] == ["root", "sub"]
    root = hierarchy.authority("root")
    assert root.subject == (("C", "VN"), ("O", "Tincay"), ("CN", "Root CA"))
    assert root.key == KeySpec("ec", curve="P-384") and root.validity_days == 7300
    assert hierarchy.services[1].key == KeySpec("rsa", size=2048)
    assert hierarchy.services[0].subject == (("CN", "OCSP"), ("O", HOSPITAL))


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def apply(data: dict) -> None:
        target: Any = data
        keys = path.split(".")
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if value is _DELETE:
            del target[keys[-1]]
        elif isinstance(target, list):
            target[int(keys[-1])] = value
        else:
            target[keys[-1]] = value
    return apply


_DELETE = object()

BROKEN: list[tuple[str, Callable[[dict], None], str]] = [
    ("top-key", _set("servces", []), "unknown key 'servces' (did you mean 'services'?)"),
    ("no-authorities", _set("authorities", []), "authorities: must list at least one CA"),
    ("authority-key", _set("authorities.0.parnet", "root"),
     "authorities[0]: unknown key 'parnet' (did you mean 'parent'?)"),
    ("missing-key", _set("authorities.1.key", _DELETE),
     "authorities[1]: missing required key 'key'"),
    ("unknown-profile", _set("authorities.0.profile", "issuing"),
     "authorities[0].profile: no profile 'issuing' (did you mean 'issuing-ca'?)"),
    ("abstract-profile", _set("authorities.0.profile", "ca-base"),
     "authorities[0].profile: profile 'ca-base' is abstract"),
    ("missing-parent", _set("authorities.0.parent", "rot"),
     "authorities[0].parent: no authority 'rot' (did you mean 'root'?)"),
    ("root-not-self-signed", _set("authorities.0.parent", None),
     "authorities[0].profile: a root (no parent) needs a self-signed profile; issuing-ca is not"),
    ("child-self-signed", _set("authorities.1.parent", "sub"),
     "authorities[1].parent: profile root-ca is self-signed, so root cannot have a parent"),
    ("not-a-ca", _set("authorities.0.profile", "clinician"),
     "authorities[0].profile: profile clinician is not a CA profile"),
    ("key-not-allowed", _set("authorities.1.key", "rsa-2048"),
     "authorities[1].key: profile root-ca does not allow rsa-2048 keys"),
    ("bad-key", _set("authorities.1.key", "dsa-1024"), "authorities[1].key: key spec 'dsa-1024'"),
    ("subject-missing-cn", _set("authorities.0.subject", "C=VN, O=X"),
     "authorities[0].subject: profile issuing-ca: CN is required"),
    ("subject-bad-parse", _set("authorities.0.subject", "C=VN, O=X, CN"),
     "authorities[0].subject: position 12: expected NAME=VALUE"),
    ("subject-not-string", _set("authorities.1.subject.0", {"C": False}),
     "authorities[1].subject[0]: C: expected a string, got False (quote it in YAML)"),
    ("subject-shape", _set("authorities.1.subject.0", {"C": "VN", "O": "x"}),
     "authorities[1].subject[0]: expected one 'NAME: value' mapping"),
    ("days", _set("authorities.1.validity_days", 10000),
     "authorities[1].validity_days: 10000 days exceeds the 9131 days profile root-ca allows"),
    ("name", _set("authorities.0.name", "sub ca/1"),
     "authorities[0].name: 'sub ca/1' may hold only letters"),
    ("duplicate", _set("services.1.name", "sub"),
     "services[1].name: 'sub' is already used by authorities[0]"),
    ("kind", _set("services.0.kind", "crl"), "services[0].kind: 'crl' is not one of ocsp, tsa"),
    ("kind-profile", _set("services.0.profile", "tsa"),
     "services[0].profile: a ocsp unit needs a profile with the OCSPSigning extended key usage"),
    ("issuer", _set("services.0.issuer", "subb"),
     "services[0].issuer: no authority 'subb' (did you mean 'sub'?)"),
    ("service-subject", _set("services.1.subject", "C=VN, CN=TSA"),
     "services[1].subject: profile tsa: O is required"),
    ("crl-validity", _set("authorities.0.crl_validity", "7 days"),
     "authorities[0].crl_validity: '7 days' is not a duration like 7d"),
    ("crl-validity-range", _set("authorities.0.crl_validity", "30m"),
     "authorities[0].crl_validity: crl_validity 30m is outside 1h..366d"),
    ("delta-longer", _set("authorities.0.delta_crl_validity", "7d"),
     "authorities[0].delta_crl_validity: delta_crl_validity 7d must be shorter than "
     "crl_validity 7d"),
    ("ocsp-validity-range", _set("authorities.0.ocsp_validity", "11d"),
     "authorities[0].ocsp_validity: ocsp_validity 11d is outside 1m..10d"),
    ("ocsp-validity-type", _set("authorities.0.ocsp_validity", 12),
     "authorities[0].ocsp_validity: expected a string"),
]


def test_publication_settings(profiles: ProfileSet) -> None:
    from datetime import timedelta

    data = copy.deepcopy(spec())
    data["authorities"][0].update(crl_validity="2d", delta_crl_validity="6h",
                                  ocsp_validity="1d12h")
    loaded = load_hierarchy(data, profiles)
    sub = loaded.authority(data["authorities"][0]["name"]).publication
    assert (sub.crl_validity, sub.delta_crl_validity, sub.ocsp_validity) == \
        (timedelta(days=2), timedelta(hours=6), timedelta(hours=36))
    assert sub.describe() == {"crl_validity": "2d", "delta_crl_validity": "6h",
                              "ocsp_validity": "1d12h"}
    default = loaded.authority(data["authorities"][1]["name"]).publication
    assert (default.crl_validity, default.delta_crl_validity, default.ocsp_validity) == \
        (timedelta(days=7), None, timedelta(hours=12))


@pytest.mark.parametrize("label,mutate,message", BROKEN, ids=[b[0] for b in BROKEN])
def test_spec_errors_name_the_field(profiles: ProfileSet, label: str,
                                    mutate: Callable[[dict], None], message: str) -> None:
    data = copy.deepcopy(spec())
    mutate(data)
    with pytest.raises(ProfileError) as info:
        load_hierarchy(data, profiles)
    assert str(info.value).startswith("<hierarchy>: ")
    assert message in str(info.value), str(info.value)


def test_parent_cycles_are_refused(profiles: ProfileSet) -> None:
    data = spec()
    data["authorities"][1]["profile"] = "issuing-ca"
    data["authorities"][1]["parent"] = "sub"
    del data["authorities"][1]["validity_days"]
    with pytest.raises(ProfileError,
                       match=r"parent cycle (sub -> root -> sub|root -> sub -> root)"):
        load_hierarchy(data, profiles)


def test_file_errors_name_the_file(profiles: ProfileSet, tmp_path: Path) -> None:
    data = spec()
    data["authorities"][0]["key"] = "ec-p521"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ProfileError) as info:
        load_hierarchy(path, profiles)
    assert str(info.value).startswith(f"{path}: authorities[0].key: key spec 'ec-p521'")
    # YAML 1.1 reads an unquoted NO as false: the loader says so instead of issuing "False".
    path.write_text(DEMO.read_text(encoding="utf-8").replace("- C: VN", "- C: NO", 1),
                    encoding="utf-8")
    with pytest.raises(ProfileError, match=r"subject\[0\]: C: expected a string, got False"):
        load_hierarchy(path, profiles)
    path.write_text("authorities: [\n", encoding="utf-8")
    with pytest.raises(ProfileError, match="invalid YAML"):
        load_hierarchy(path, profiles)
    nameless = tmp_path / "mine.yaml"
    data = spec()
    del data["name"]
    nameless.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert load_hierarchy(nameless, profiles).name == "mine"
