"""Hierarchy specs: which CAs and service units (OCSP responders, TSA units) to create.

A spec is data (``profiles/hierarchies/*.yaml``), checked against the loaded profiles before
anything touches an HSM or a database, so a typo fails in a second instead of after half a key
ceremony. Schema (unknown keys are errors)::

    name: demo                      # optional; defaults to the file stem
    description: text
    authorities:                    # any order; returned parents first
      - name: root-ca               # URL-safe; unique across authorities and services
        profile: root-ca            # a self-signed profile <=> no parent
        key: ec-p256                # KeySpec syntax, allowed by the profile
        subject:                    # list of single-key mappings (order irrelevant: the
          - C: VN                   #   profile orders RDNs) or one string for parse_subject
          - CN: Tincay Demo Root CA
        validity_days: 9131         # optional; the profile's default otherwise
        crl_validity: 7d            # optional: CRL nextUpdate - thisUpdate (default 7d)
        delta_crl_validity: 1d      # optional: publish delta CRLs valid this long (default: none)
        ocsp_validity: 12h          # optional: OCSP nextUpdate - thisUpdate (default 12h)
      - {name: issuing-ca, parent: root-ca, profile: issuing-ca, key: ec-p256,
         subject: "C=VN, O=Bệnh viện Đa khoa Tincay, CN=Tincay Demo Issuing CA"}
    services:
      - {name: ocsp-issuing-ca, kind: ocsp, issuer: issuing-ca, profile: ocsp-responder,
         key: ec-p256, subject: ..., validity_days: 30}

The YAML is validated by pydantic models (strict types, unknown keys refused) that also run
the checks against the loaded profiles, which they get through the validation context; errors
are worded by :mod:`ca.validation`, like the profiles' own. What comes out are the frozen
dataclasses below, which the service and the store use.

Pure: imports no flask, sqlalchemy or click.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Mapping

from pydantic import AfterValidator, Field, ValidationError, ValidationInfo, model_validator

from ca.durations import parse_duration
from ca.errors import ProfileError, SubjectError, UnsupportedKeyError
from ca.keys.base import KeySpec
from ca.publication import PublicationSettings
from ca.profiles import EKU_NAMES, Profile, ProfileSet
from ca.profiles.loader import read_yaml
from ca.subject import build_name
from ca.validation import FieldError, InputModel, NonBlank, Where, hint, subject_pairs

__all__ = ["AuthoritySpec", "HierarchySpec", "PublicationSettings", "ServiceSpec",
           "load_hierarchy"]

ServiceKind = Literal["ocsp", "tsa"]
SERVICE_KINDS: dict[str, str] = {"ocsp": EKU_NAMES["OCSPSigning"],
                                 "tsa": EKU_NAMES["timeStamping"]}
_UNIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # safe in URLs and key labels
_PUBLICATION_KEYS = ("crl_validity", "delta_crl_validity", "ocsp_validity")

Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class AuthoritySpec:
    """A CA to create: a root when ``parent`` is None, else certified by ``parent``."""

    name: str
    profile: str
    key: KeySpec
    subject: Pairs
    parent: str | None = None
    validity_days: int | None = None
    publication: PublicationSettings = field(default_factory=PublicationSettings)


@dataclass(frozen=True)
class ServiceSpec:
    """An OCSP responder or TSA unit: its own key, certified by the CA ``issuer``."""

    name: str
    kind: ServiceKind
    issuer: str
    profile: str
    key: KeySpec
    subject: Pairs
    validity_days: int | None = None


@dataclass(frozen=True)
class HierarchySpec:
    """A whole hierarchy; ``authorities`` is ordered parents before children."""

    name: str
    source: Path | None
    authorities: tuple[AuthoritySpec, ...]
    services: tuple[ServiceSpec, ...] = ()
    description: str = ""

    def authority(self, name: str) -> AuthoritySpec:
        for spec in self.authorities:
            if spec.name == name:
                return spec
        raise ProfileError(f"hierarchy {self.name}: no authority {name!r}")


# --- the input schema -------------------------------------------------------------------------

def _unit_name(name: str) -> str:
    if not _UNIT_NAME.fullmatch(name):
        raise FieldError(f"{name!r} may hold only letters, digits, '.', '_' and '-' "
                         "(it names URLs and HSM key labels)")
    return name


def _key_spec(text: str) -> str:
    """A KeySpec's text, canonical (``EC-P256`` -> ``ec-p256``)."""
    try:
        return str(KeySpec.parse(text))
    except UnsupportedKeyError as exc:
        raise FieldError(str(exc)) from None


UnitName = Annotated[NonBlank, AfterValidator(_unit_name)]
KeySpecText = Annotated[NonBlank, AfterValidator(_key_spec)]
Duration = Annotated[NonBlank, AfterValidator(parse_duration)]
Subject = Annotated[Any, AfterValidator(subject_pairs)]


def _known_profile(name: str, info: ValidationInfo) -> str:
    """The name of a concrete profile of the ProfileSet in the validation context."""
    try:
        info.context["profiles"].get(name)
    except ProfileError as exc:
        raise FieldError(str(exc)) from None
    return name


ProfileName = Annotated[NonBlank, AfterValidator(_known_profile)]


def _against_profile(profile: Profile, unit: AuthorityInput | ServiceInput) -> None:
    """A unit's key, subject and validity as its profile allows them."""
    spec = KeySpec.parse(unit.key)
    if not profile.allows_key(spec):
        raise FieldError(f"profile {profile.name} does not allow {spec} keys (allowed: "
                         f"{', '.join(str(s) for s in profile.key_algorithms)})", "key")
    try:
        build_name(profile, unit.subject)
    except SubjectError as exc:
        raise FieldError(str(exc), "subject") from None
    if unit.validity_days is not None and unit.validity_days > profile.validity.max_days:
        raise FieldError(f"{unit.validity_days} days exceeds the {profile.validity.max_days} "
                         f"days profile {profile.name} allows", "validity_days")


class AuthorityInput(InputModel):
    """One ``authorities:`` entry; its fields in the order their checks have always run."""

    key_order: ClassVar[tuple[str, ...]] = (
        "name", "profile", "key", "subject", "parent", "validity_days", *_PUBLICATION_KEYS)

    name: UnitName
    profile: ProfileName
    parent: NonBlank | None = None
    key: KeySpecText
    subject: Subject
    validity_days: int | None = Field(None, ge=1)
    crl_validity: Duration | None = None
    delta_crl_validity: Duration | None = None
    ocsp_validity: Duration | None = None

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> AuthorityInput:
        profile = info.context["profiles"].get(self.profile)
        if profile.basic_constraints is None or not profile.basic_constraints.ca:
            raise FieldError(f"profile {profile.name} is not a CA profile", "profile")
        if self.parent is None and not profile.self_signed:
            raise FieldError(f"a root (no parent) needs a self-signed profile; {profile.name} "
                             "is not", "profile")
        if self.parent is not None and profile.self_signed:
            raise FieldError(f"profile {profile.name} is self-signed, so {self.name} cannot "
                             "have a parent", "parent")
        _against_profile(profile, self)
        self.publication()
        return self

    def publication(self) -> PublicationSettings:
        values = {key: getattr(self, key) for key in _PUBLICATION_KEYS
                  if getattr(self, key) is not None}
        try:
            return PublicationSettings(**values)
        except ValueError as exc:  # the message starts with the setting's name
            raise FieldError(str(exc), str(exc).split(" ", 1)[0]) from None

    def to_spec(self) -> AuthoritySpec:
        return AuthoritySpec(self.name, self.profile, KeySpec.parse(self.key), self.subject,
                             self.parent, self.validity_days, self.publication())


class ServiceInput(InputModel):
    """One ``services:`` entry; its fields in the order their checks have always run."""

    key_order: ClassVar[tuple[str, ...]] = (
        "name", "kind", "issuer", "profile", "key", "subject", "validity_days")

    name: UnitName
    kind: ServiceKind
    profile: ProfileName
    issuer: NonBlank
    key: KeySpecText
    subject: Subject
    validity_days: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> ServiceInput:
        profile = info.context["profiles"].get(self.profile)
        if SERVICE_KINDS[self.kind] not in profile.extended_key_usage:
            usage = "OCSPSigning" if self.kind == "ocsp" else "timeStamping"
            raise FieldError(f"a {self.kind} unit needs a profile with the {usage} extended key "
                             f"usage; {profile.name} has none", "profile")
        _against_profile(profile, self)
        return self

    def to_spec(self) -> ServiceSpec:
        return ServiceSpec(self.name, self.kind, self.issuer, self.profile,
                           KeySpec.parse(self.key), self.subject, self.validity_days)


def _at_least_one(authorities: list[AuthorityInput]) -> list[AuthorityInput]:
    if not authorities:
        raise FieldError("must list at least one CA")
    return authorities


class HierarchyInput(InputModel):
    name: NonBlank = ""  # not given: the file's stem (or "inline")
    description: str = ""
    authorities: Annotated[list[AuthorityInput], AfterValidator(_at_least_one)]
    services: list[ServiceInput] = []


# --- loading ----------------------------------------------------------------------------------

def load_hierarchy(source: Path | Mapping[str, Any], profiles: ProfileSet) -> HierarchySpec:
    """Read and check a hierarchy spec (a YAML file, or an already-parsed mapping).

    Every error is a ProfileError naming the file and the field path, e.g.
    ``profiles/hierarchies/demo.yaml: authorities[1].parent: no authority 'rot-ca'``.
    """
    if isinstance(source, Mapping):
        path, raw, default_name = None, dict(source), "inline"
        where = Where("<hierarchy>")
    else:
        path = Path(source)
        raw, default_name = read_yaml(path), path.stem
        where = Where(path)
    try:
        spec = HierarchyInput.model_validate(raw, context={"profiles": profiles})
    except ValidationError as exc:
        raise where.invalid(exc, HierarchyInput) from None
    authorities = [(a.to_spec(), f"authorities[{i}]") for i, a in enumerate(spec.authorities)]
    services = [(s.to_spec(), f"services[{i}]") for i, s in enumerate(spec.services)]
    _check_unique(where, authorities, services)
    ordered = _parents_first(where, authorities)
    known = {a.name for a, _ in authorities}
    for unit, item in services:
        if unit.issuer not in known:
            raise where.error(f"{item}.issuer", f"no authority {unit.issuer!r}"
                                                f"{hint(unit.issuer, known)}; known: "
                                                f"{', '.join(sorted(known))}")
    name = spec.name if "name" in spec.model_fields_set else default_name
    return HierarchySpec(name, path, tuple(ordered), tuple(s for s, _ in services),
                         spec.description)


# --- whole-spec checks -------------------------------------------------------------------------

def _check_unique(where: Where, authorities: list[tuple[AuthoritySpec, str]],
                  services: list[tuple[ServiceSpec, str]]) -> None:
    """Names are unique across CAs and units: both label keys on the same token."""
    seen: dict[str, str] = {}
    for spec, item in [*authorities, *services]:
        if spec.name in seen:
            raise where.error(f"{item}.name", f"{spec.name!r} is already used by {seen[spec.name]}")
        seen[spec.name] = item


def _parents_first(where: Where, authorities: list[tuple[AuthoritySpec, str]]
                   ) -> list[AuthoritySpec]:
    """Order CAs so each parent precedes its children (stable); missing parents and cycles fail."""
    by_name = {spec.name: (spec, item) for spec, item in authorities}
    for spec, item in authorities:
        if spec.parent is not None and spec.parent not in by_name:
            raise where.error(f"{item}.parent", f"no authority {spec.parent!r}"
                                                f"{hint(spec.parent, by_name)}; known: "
                                                f"{', '.join(sorted(by_name))}")
    ordered: list[AuthoritySpec] = []
    placed: set[str] = set()

    def place(name: str, chain: tuple[str, ...]) -> None:
        if name in placed:
            return
        spec, item = by_name[name]
        if name in chain:
            cycle = " -> ".join(chain[chain.index(name):] + (name,))
            raise where.error(f"{item}.parent", f"parent cycle {cycle}")
        if spec.parent is not None:
            place(spec.parent, chain + (name,))
        placed.add(name)
        ordered.append(spec)

    for spec, _ in authorities:
        place(spec.name, ())
    return ordered
