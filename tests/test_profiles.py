"""The profile loader (ca/profiles/) and the shipped profiles/*.yaml.

Broken YAML is written to tmp_path and every error must name the file, the profile and the field
path, because the operator who reads it has only the message to find the typo.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from ca.errors import ProfileError
from ca.keys.base import KeySpec
from ca.profiles import (Profile, ProfileSet, check_profile_file, load_profiles,
                         profile_as_dict)

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"
SHIPPED = {"root-ca", "intermediate-ca", "issuing-ca", "ocsp-responder", "tsa", "clinician", "pharmacist", "teacher",
           "citizen", "organization-seal", "tls-server", "tls-client", "clinician-qualified",
           "organization-seal-qualified"}
ABSTRACT = {"ca-base", "person-base", "service-base"}


@pytest.fixture(scope="module")
def shipped() -> ProfileSet:
    return load_profiles(PROFILES_DIR)


def write(directory: Path, data: dict[str, Any] | str, name: str | None = None) -> Path:
    name = name or (data["name"] if isinstance(data, dict) else "x")
    path = directory / f"{name}.yaml"
    text = data if isinstance(data, str) else yaml.safe_dump(data, allow_unicode=True,
                                                             sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def minimal(name: str = "x") -> dict[str, Any]:
    return {
        "name": name,
        "subject": [{"name": "C", "required": True, "value": "VN"},
                    {"name": "CN", "required": True},
                    {"name": "UID", "required": True, "max_count": 2,
                     "patterns": [r"CCCD:\d{12}"]}],
        "key_algorithms": ["ec-p256"],
        "validity": {"default_days": 365, "max_days": 365},
        "key_usage": ["nonRepudiation"],
    }


# --- the shipped profiles -------------------------------------------------------------------

def test_every_shipped_profile_loads(shipped: ProfileSet) -> None:
    assert set(shipped.names()) == SHIPPED
    assert shipped.names() == sorted(SHIPPED)
    assert set(shipped.abstract_names()) == ABSTRACT
    assert len(shipped) == 14
    assert {p.name for p in shipped} == SHIPPED
    assert "clinician" in shipped and "person-base" not in shipped and "nope" not in shipped
    for profile in shipped:
        assert profile.source == PROFILES_DIR / f"{profile.name}.yaml"
        assert not profile.abstract
        assert profile.key_algorithms and profile.key_usage and profile.subject
        # each shipped profile is also fine on its own through check_profile_file
        assert check_profile_file(profile.source, shipped) == profile


def test_shipped_ca_and_service_profiles(shipped: ProfileSet) -> None:
    root, issuing = shipped.get("root-ca"), shipped.get("issuing-ca")
    assert root.self_signed and root.basic_constraints.ca
    assert root.basic_constraints.path_length is None
    assert root.validity.max_days == 9131
    assert not root.authority_info_access and not root.crl_distribution_point
    assert root.key_usage == frozenset({"keyCertSign", "cRLSign"})
    assert issuing.basic_constraints.path_length == 0 and not issuing.self_signed
    assert issuing.validity.max_days <= 3653
    assert issuing.authority_info_access and issuing.crl_distribution_point
    [policy] = issuing.policies
    assert policy.oid.startswith("1.3.6.1.4.1.59999.") and policy.cps_uri.startswith("https://")

    ocsp = shipped.get("ocsp-responder")
    assert ocsp.extended_key_usage == ("1.3.6.1.5.5.7.3.9",) and ocsp.ocsp_nocheck
    assert 28 <= ocsp.validity.default_days <= ocsp.validity.max_days <= 92
    assert not ocsp.authority_info_access and not ocsp.crl_distribution_point
    tsa = shipped.get("tsa")
    assert tsa.extended_key_usage == ("1.3.6.1.5.5.7.3.8",)
    assert tsa.extended_key_usage_critical and tsa.validity.max_days <= 1827
    tls = shipped.get("tls-server")
    assert tls.extended_key_usage == ("1.3.6.1.5.5.7.3.1",)
    assert tls.dns_san == "required" and tls.validity.max_days <= 199
    client = shipped.get("tls-client")  # an API client's credential (RFC 8705)
    assert client.extended_key_usage == ("1.3.6.1.5.5.7.3.2",)
    assert client.key_usage == frozenset({"digitalSignature"})
    assert client.dns_san == "forbidden" and client.email_san == "forbidden"
    assert client.key_algorithms == tls.key_algorithms and client.validity.max_days <= 398


def test_shipped_person_and_seal_profiles(shipped: ProfileSet) -> None:
    for name in ("clinician", "pharmacist", "teacher", "citizen", "clinician-qualified"):
        profile = shipped.get(name)
        assert profile.rule("C").value == "VN" and profile.rule("C").required
        assert profile.rule("CN").required
        uid = profile.rule("UID")
        assert uid.required and r"CCCD:\d{12}" in uid.patterns
        assert profile.validity.max_days <= 1096
        assert KeySpec.parse("rsa-2048") in profile.key_algorithms
        assert "nonRepudiation" in profile.key_usage
    for name in ("clinician", "pharmacist", "teacher"):
        assert shipped.get(name).rule("UID").max_count == 2  # CCCD: and the employer's MST:
    citizen = shipped.get("citizen")
    assert citizen.rule("UID").max_count == 1
    assert not any(p.startswith("MST") for p in citizen.rule("UID").patterns)
    assert citizen.rule("O") is None and citizen.rule("T") is None
    assert [r.name for r in shipped.get("clinician").subject] == [
        "C", "ST", "L", "O", "OU", "T", "givenName", "surname", "CN", "serialNumber", "UID"]

    qualified = shipped.get("clinician-qualified")
    assert qualified.rule("givenName").required and qualified.rule("surname").required
    assert qualified.rule("serialNumber").required
    assert qualified.rule("serialNumber").patterns == (r"PNOVN-\d{12}",)
    assert [p.oid for p in qualified.policies][-1] == "0.4.0.194112.1.2"
    qc = qualified.qc_statements
    assert (qc.compliance, qc.sscd, qc.qc_type, qc.legislation, qc.semantics) == \
        (True, True, "esign", ("VN",), "natural")
    assert qc.pds[0][0].startswith("https://") and qc.pds[0][1] == "en"

    seal = shipped.get("organization-seal")
    assert [r.name for r in seal.subject if r.required] == ["C", "O", "UID", "CN"]
    assert seal.rule("UID").max_count == 2
    assert set(seal.rule("UID").patterns) == {r"MST:\d{10}(-\d{3})?", r"MNS:\d{7}"}
    seal_q = shipped.get("organization-seal-qualified")
    assert seal_q.rule("organizationIdentifier").required
    assert seal_q.rule("organizationIdentifier").patterns == (r"VATVN-\d{10}(-\d{3})?",)
    assert seal_q.qc_statements.qc_type == "eseal" and seal_q.qc_statements.semantics == "legal"
    assert "0.4.0.194112.1.1" in [p.oid for p in seal_q.policies]


def test_profile_set_lookup(shipped: ProfileSet) -> None:
    with pytest.raises(ProfileError) as info:
        shipped.get("clinican")
    assert "no profile 'clinican' (did you mean 'clinician'?); known: citizen, clinician," in \
        str(info.value)
    with pytest.raises(ProfileError, match="abstract"):
        shipped.get("person-base")
    assert shipped.get("person-base", allow_abstract=True).abstract


def test_subfolders_are_not_profiles(shipped: ProfileSet) -> None:
    assert (PROFILES_DIR / "hierarchies" / "demo.yaml").exists()
    assert "demo" not in shipped and "demo" not in shipped.abstract_names()


def test_profile_as_dict_is_json_and_loads_back(shipped: ProfileSet, tmp_path: Path) -> None:
    for name in shipped.names() + shipped.abstract_names():
        profile = shipped.get(name, allow_abstract=True)
        data = profile_as_dict(profile)
        json.dumps(data)  # plain data
        assert data["name"] == name and data["source"] == str(profile.source)
        data = {k: v for k, v in data.items() if k not in ("source", "extends")}
        write(tmp_path, data)
    again = load_profiles(tmp_path)
    for name in shipped.names() + shipped.abstract_names():
        original = shipped.get(name, allow_abstract=True)
        assert again.get(name, allow_abstract=True) == dataclasses.replace(
            original, source=tmp_path / f"{name}.yaml", extends=None)
    as_dict = profile_as_dict(shipped.get("tsa"))
    assert as_dict["extended_key_usage"] == ["timeStamping"]
    assert as_dict["extends"] == "service-base"


# --- validation errors ----------------------------------------------------------------------

def _set(path: str, value: Any) -> Callable[[dict], None]:
    def apply(data: dict) -> None:
        target = data
        keys = path.split(".")
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target.setdefault(key, {})
        last = keys[-1]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return apply


def _rename(old: str, new: str) -> Callable[[dict], None]:
    return lambda data: data.__setitem__(new, data.pop(old))


BROKEN: list[tuple[str, Callable[[dict], None], str]] = [
    ("typo", _rename("key_usage", "key_usgae"),
     "unknown key 'key_usgae' (did you mean 'key_usage'?)"),
    ("ku-name", _set("key_usage", ["nonrepudiation"]),
     "key_usage[0]: unknown keyUsage 'nonrepudiation' (did you mean 'nonRepudiation'?)"),
    ("eku-name", _set("extended_key_usage", ["serverAuht"]),
     "extended_key_usage[0]: unknown extended key usage 'serverAuht' (did you mean "
     "'serverAuth'?)"),
    ("regex", _set("subject.2.patterns", [r"CCCD:(\d{12}", r"x"]),
     "subject[2].patterns[0]: invalid regex"),
    ("policy-oid", _set("policies", [{"oid": "1.3.6.x"}]),
     "policies[0].oid: '1.3.6.x' is not a dotted OID"),
    ("key-spec", _set("key_algorithms", ["ec-p256", "rsa-1024"]),
     "key_algorithms[1]: key spec 'rsa-1024': RSA size must be one of"),
    ("key-dup", _set("key_algorithms", ["ec-p256", "EC-P256"]),
     "key_algorithms[1]: ec-p256 listed twice"),
    ("days", _set("validity", {"default_days": 400, "max_days": 365}),
     "validity.default_days: 400 exceeds max_days 365"),
    ("days-type", _set("validity.max_days", "365"),
     "validity.max_days: expected an integer, got a string '365'"),
    ("days-missing", _set("validity", {"max_days": 90}),
     "validity: missing required key 'default_days'"),
    ("pathlen", _set("basic_constraints", {"ca": False, "path_length": 0}),
     "basic_constraints.path_length: pathLenConstraint is only meaningful when ca is true"),
    ("qc-type", _set("qc_statements", {"qc_type": "esig"}),
     "qc_statements.qc_type: 'esig' is not one of esign, eseal, web (did you mean 'esign'?)"),
    ("pds", _set("qc_statements", {"pds": [{"url": "http://x.example.vn/pds", "language": "en"}]}),
     "qc_statements.pds[0].url: 'http://x.example.vn/pds' is not an absolute https URL"),
    ("pds-lang", _set("qc_statements", {"pds": [{"url": "https://x.vn/p", "language": "EN"}]}),
     "qc_statements.pds[0].language: 'EN' is not a two-letter ISO 639-1 code"),
    ("legislation", _set("qc_statements", {"legislation": ["vn"]}),
     "qc_statements.legislation[0]: 'vn' is not an ISO 3166 alpha-2 code"),
    ("semantics", _set("qc_statements", {"semantics": "person"}),
     "qc_statements.semantics: 'person' is not one of natural, legal"),
    ("qc-empty", _set("qc_statements", {"compliance": False}),
     "qc_statements: states nothing"),
    ("bool", _set("key_usage_critical", "yes please"),
     "key_usage_critical: expected true or false, got a string 'yes please'"),
    ("san", _set("email_san", "sometimes"),
     "email_san: 'sometimes' is not one of forbidden, optional, required"),
    ("hash", _set("signature", {"hash": "sha1"}),
     "signature.hash: 'sha1' is not one of sha256, sha384, sha512"),
    ("padding", _set("signature", {"rsa_padding": "oaep"}),
     "signature.rsa_padding: 'oaep' is not one of pkcs1v15, pss"),
    ("cps", _set("policies", [{"oid": "1.2.3", "cps_uri": "ftp://x.vn/cps"}]),
     "policies[0].cps_uri: 'ftp://x.vn/cps' is not an absolute http or https URL"),
    ("notice", _set("policies", [{"oid": "1.2.3", "user_notice": "x" * 201}]),
     "policies[0].user_notice: 201 characters; RFC 5280 allows at most 200"),
    ("policy-dup", _set("policies", [{"oid": "1.2.3"}, {"oid": "1.2.3"}]),
     "policies[1].oid: policy 1.2.3 listed twice"),
    ("subject-key", _set("subject.1", {"name": "CN", "requird": True}),
     "subject[1]: unknown key 'requird' (did you mean 'required'?)"),
    ("subject-attr", _set("subject.1", {"name": "Email2"}),
     "subject[1].name: unknown attribute 'Email2'"),
    ("subject-oid", _set("subject.1", {"name": "CN", "oid": "2.5.4.4"}),
     "subject[1].oid: CN is 2.5.4.3, not 2.5.4.4"),
    ("subject-dup", lambda d: d["subject"].append({"name": "commonName"}),
     "subject[3].name: CN appears twice; use max_count"),
    ("subject-ub", _set("subject.1", {"name": "CN", "max_length": 100}),
     "subject[1].max_length: 100 exceeds the upper bound 64 of CN"),
    ("subject-count", _set("subject.2.max_count", 0),
     "subject[2].max_count: must be at least 1, got 0"),
    ("fixed-value", _set("subject.0", {"name": "C", "value": "Viet Nam"}),
     "subject[0].value: profile x: C 'Viet Nam' is 8 characters, at most 2"),
    ("fixed-vs-pattern", _set("subject.2", {"name": "UID", "value": "CCCD:1",
                                            "patterns": [r"CCCD:\d{12}"]}),
     r"subject[2].value: profile x: UID 'CCCD:1' does not match CCCD:\d{12}"),
    ("kcs", _set("key_usage", ["keyCertSign"]),
     "key_usage: keyCertSign needs basic_constraints ca: true"),
    ("ca-kcs", _set("basic_constraints", {"ca": True}),
     "key_usage: a CA profile needs keyCertSign"),
    ("self-signed", _set("self_signed", True),
     "self_signed: a self-signed profile must have basic_constraints ca: true"),
    ("nocheck", _set("ocsp_nocheck", True),
     "ocsp_nocheck: id-pkix-ocsp-nocheck belongs on OCSP responder certificates"),
    ("eku-critical", _set("extended_key_usage_critical", True),
     "extended_key_usage_critical: no extended_key_usage to mark"),
    ("missing", lambda d: d.pop("validity"), "missing required key 'validity'"),
    ("remove-alone", _set("subject_remove", ["CN"]),
     "subject_remove: only meaningful with extends"),
    ("description", _set("description", 42), "description: expected a string, got an integer"),
]


@pytest.mark.parametrize("label,mutate,message", BROKEN, ids=[b[0] for b in BROKEN])
def test_validation_errors_name_file_profile_and_field(tmp_path: Path, label: str,
                                                       mutate: Callable[[dict], None],
                                                       message: str) -> None:
    data = copy.deepcopy(minimal())
    mutate(data)
    path = write(tmp_path, data)
    for load in (lambda: load_profiles(tmp_path), lambda: check_profile_file(path)):
        with pytest.raises(ProfileError) as info:
            load()
        text = str(info.value)
        assert text.startswith(f"{path}: profile x: "), text
        assert message in text, text


def test_the_minimal_profile_itself_is_valid(tmp_path: Path) -> None:
    write(tmp_path, minimal())
    profile = load_profiles(tmp_path).get("x")
    assert [r.name for r in profile.subject] == ["C", "CN", "UID"]
    assert profile.rule("CN").max_length == 64  # RFC 5280 ub-common-name by default


@pytest.mark.parametrize("text,message", [
    ("name: x\nsubject: [\n", "invalid YAML"),
    ("- just\n- a list\n", "expected a mapping at the top, got a list"),
    ("subject: []\n", "missing required key 'name'"),
    ("name: y\n", "name: 'y' must equal the file name 'x'"),
    ("name: X\n", "name: 'X' must be lower-case"),
])
def test_file_level_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text, "x")
    with pytest.raises(ProfileError) as info:
        load_profiles(tmp_path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="not a directory"):
        load_profiles(tmp_path / "missing")


# --- extends --------------------------------------------------------------------------------

def test_extends_merges_subject_by_attribute(tmp_path: Path) -> None:
    base = minimal("base")
    base["abstract"] = True
    base["description"] = "the base"
    base["policies"] = [{"oid": "1.2.3"}]
    base["subject"].insert(1, {"name": "O"})
    write(tmp_path, base)
    write(tmp_path, {"name": "child", "extends": "base",
                     "subject": [{"name": "UID", "max_count": 1},  # field-wise override
                                 {"name": "organizationName", "required": True},  # alias of O
                                 {"name": "serialNumber", "patterns": [r"PNOVN-\d{12}"]}],
                     "validity": {"default_days": 30, "max_days": 90}})
    write(tmp_path, {"name": "grandchild", "extends": "child", "subject_remove": ["O"],
                     "qc_statements": {"qc_type": "esign"}})
    profiles = load_profiles(tmp_path)
    assert profiles.names() == ["child", "grandchild"]  # abstract base not listed
    child = profiles.get("child")
    assert not child.abstract and child.description == "" and child.extends == "base"
    assert [r.name for r in child.subject] == ["C", "O", "CN", "UID", "serialNumber"]
    assert child.rule("UID").max_count == 1
    assert child.rule("UID").patterns == (r"CCCD:\d{12}",) and child.rule("UID").required
    assert child.rule("O").required
    assert child.validity.max_days == 90  # replaced wholesale
    assert child.policies == profiles.get("base", allow_abstract=True).policies  # inherited
    grandchild = profiles.get("grandchild")
    assert [r.name for r in grandchild.subject] == ["C", "CN", "UID", "serialNumber"]
    assert grandchild.validity.max_days == 90 and grandchild.qc_statements.qc_type == "esign"


def test_extends_errors_in_the_parent_name_the_parent_file(tmp_path: Path) -> None:
    base = minimal("base")
    base["key_usage"] = ["nonRepudation"]
    base_path = write(tmp_path, base)
    write(tmp_path, {"name": "child", "extends": "base"})
    with pytest.raises(ProfileError) as info:
        load_profiles(tmp_path)
    assert str(info.value).startswith(f"{base_path}: profile base: key_usage[0]: unknown keyUsage")


@pytest.mark.parametrize("files,message", [
    ({"a": {"extends": "b"}, "b": {"extends": "a"}}, "extends: inheritance cycle a -> b -> a"),
    ({"a": {"extends": "a"}}, "extends: inheritance cycle a -> a"),
    ({"a": {"extends": "b"}, "b": {"extends": "c"}, "c": {"extends": "b"}},
     "inheritance cycle b -> c -> b"),
    ({"a": {"extends": "bsae"}, "base": {}}, "extends: no profile 'bsae' (did you mean 'base'?)"),
    ({"a": {"extends": "base", "subject_remove": ["OU"]}, "base": {}},
     "subject_remove[0]: OU is not in the subject of base"),
    ({"a": {"extends": "base", "validity": {"max_days": 10}}, "base": {}},
     "profile a: validity: missing required key 'default_days'"),
    ({"a": {"extends": "base", "abstract": True, "key_usage": []}, "base": {}},
     "profile a: key_usage: must list at least one keyUsage bit"),
])
def test_extends_errors(tmp_path: Path, files: dict[str, dict], message: str) -> None:
    for name, extra in files.items():
        write(tmp_path, {**minimal(name), **extra})
    with pytest.raises(ProfileError) as info:
        load_profiles(tmp_path)
    assert message in str(info.value)


def test_abstract_profiles_may_be_incomplete_concrete_ones_not(tmp_path: Path) -> None:
    write(tmp_path, {"name": "base", "abstract": True, "key_usage": ["digitalSignature"]})
    write(tmp_path, {"name": "child", "extends": "base",
                     "subject": [{"name": "CN", "required": True}],
                     "key_algorithms": ["ec-p256"]})
    with pytest.raises(ProfileError) as info:
        load_profiles(tmp_path)
    assert str(info.value) == (f"{tmp_path / 'child.yaml'}: profile child: missing required key "
                               "'validity' (not set here nor in base)")


def test_check_profile_file_resolves_against_a_base(shipped: ProfileSet, tmp_path: Path) -> None:
    path = write(tmp_path, {"name": "nurse", "extends": "person-base",
                            "description": "Điều dưỡng",
                            "subject": [{"name": "O", "required": True}]})
    nurse = check_profile_file(path, shipped)
    assert nurse.extends == "person-base" and nurse.rule("O").required
    assert nurse.rule("UID").max_count == 2
    with pytest.raises(ProfileError, match="no profiles were given"):
        check_profile_file(path)
    bad = write(tmp_path, {"name": "bad", "extends": "persn-base"})
    with pytest.raises(ProfileError) as info:
        check_profile_file(bad, shipped)
    assert str(info.value).startswith(f"{bad}: profile bad: extends: no profile 'persn-base'")
    assert "(did you mean 'person-base'?)" in str(info.value)
    loop = write(tmp_path, {"name": "loop", "extends": "loop"})
    with pytest.raises(ProfileError, match="inheritance cycle loop -> loop"):
        check_profile_file(loop, shipped)


def test_profile_is_frozen(shipped: ProfileSet) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        shipped.get("clinician").name = "x"  # type: ignore[misc]
    assert isinstance(shipped.get("clinician"), Profile)
