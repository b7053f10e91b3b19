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

Pure: imports no flask, sqlalchemy or click.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Mapping

from ca.durations import format_duration, parse_duration
from ca.errors import ProfileError, SubjectError, UnsupportedKeyError
from ca.keys.base import KeySpec
from ca.profiles import (EKU_NAMES, Profile, ProfileSet, _hint, _int, _list, _mapping,
                         _read_yaml, _str, _Where)
from ca.subject import build_name, canonical_name, parse_subject

__all__ = ["AuthoritySpec", "HierarchySpec", "PublicationSettings", "ServiceSpec",
           "load_hierarchy"]

ServiceKind = Literal["ocsp", "tsa"]
SERVICE_KINDS: dict[str, str] = {"ocsp": EKU_NAMES["OCSPSigning"],
                                 "tsa": EKU_NAMES["timeStamping"]}
_UNIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # safe in URLs and key labels
_TOP_KEYS = ("name", "description", "authorities", "services")
_PUBLICATION_KEYS = ("crl_validity", "delta_crl_validity", "ocsp_validity")
_AUTHORITY_KEYS = ("name", "profile", "key", "subject", "parent", "validity_days",
                   *_PUBLICATION_KEYS)
_SERVICE_KEYS = ("name", "kind", "issuer", "profile", "key", "subject", "validity_days")

Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class PublicationSettings:
    """How long a CA's CRLs, delta CRLs and OCSP answers are valid (nextUpdate - thisUpdate).

    Bounds: a CRL between 1 hour and 366 days; a delta CRL (None: the CA publishes none)
    from 5 minutes up to, not including, the full CRL's validity; OCSP from 1 minute to
    10 days (the CA/Browser Forum's ceiling for subscriber certificates). ValueError
    otherwise, naming the setting.
    """

    crl_validity: timedelta = timedelta(days=7)
    delta_crl_validity: timedelta | None = None
    ocsp_validity: timedelta = timedelta(hours=12)

    def __post_init__(self) -> None:
        _bounded("crl_validity", self.crl_validity, timedelta(hours=1), timedelta(days=366))
        _bounded("ocsp_validity", self.ocsp_validity, timedelta(minutes=1), timedelta(days=10))
        if self.delta_crl_validity is not None:
            if self.delta_crl_validity >= self.crl_validity:
                raise ValueError(f"delta_crl_validity {format_duration(self.delta_crl_validity)}"
                                 f" must be shorter than crl_validity "
                                 f"{format_duration(self.crl_validity)}")
            _bounded("delta_crl_validity", self.delta_crl_validity, timedelta(minutes=5),
                     self.crl_validity - timedelta(seconds=1))

    def describe(self) -> dict[str, str | None]:
        return {"crl_validity": format_duration(self.crl_validity),
                "delta_crl_validity": format_duration(self.delta_crl_validity)
                if self.delta_crl_validity is not None else None,
                "ocsp_validity": format_duration(self.ocsp_validity)}


def _bounded(name: str, value: timedelta, low: timedelta, high: timedelta) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} {format_duration(value)} is outside "
                         f"{format_duration(low)}..{format_duration(high)}")


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


def load_hierarchy(source: Path | Mapping[str, Any], profiles: ProfileSet) -> HierarchySpec:
    """Read and check a hierarchy spec (a YAML file, or an already-parsed mapping).

    Every error is a ProfileError naming the file and the field path, e.g.
    ``profiles/hierarchies/demo.yaml: authorities[1].parent: no authority 'rot-ca'``.
    """
    if isinstance(source, Mapping):
        path, raw, default_name = None, dict(source), "inline"
        where = _Where("<hierarchy>")
    else:
        path = Path(source)
        raw, default_name = _read_yaml(path), path.stem
        where = _Where(path)
    _mapping(where, "", raw, _TOP_KEYS, required=("authorities",))
    name = _str(where, "name", raw.get("name", default_name))
    description = _str(where, "description", raw.get("description", ""), empty=True)
    authorities = [_authority(where, f"authorities[{i}]", entry, profiles)
                   for i, entry in enumerate(_list(where, "authorities", raw["authorities"]))]
    if not authorities:
        raise where.error("authorities", "must list at least one CA")
    services = [_service(where, f"services[{i}]", entry, profiles)
                for i, entry in enumerate(_list(where, "services", raw.get("services", [])))]
    _check_unique(where, authorities, services)
    ordered = _parents_first(where, authorities)
    known = {spec.name for spec, _ in authorities}
    for spec, item in services:
        if spec.issuer not in known:
            raise where.error(f"{item}.issuer", f"no authority {spec.issuer!r}"
                                                f"{_hint(spec.issuer, known)}; known: "
                                                f"{', '.join(sorted(known))}")
    return HierarchySpec(name, path, tuple(ordered), tuple(s for s, _ in services), description)


# --- entries ----------------------------------------------------------------------------------

def _authority(where: _Where, item: str, entry: object,
               profiles: ProfileSet) -> tuple[AuthoritySpec, str]:
    raw = _mapping(where, item, entry, _AUTHORITY_KEYS,
                   required=("name", "profile", "key", "subject"))
    name = _unit_name(where, f"{item}.name", raw["name"])
    profile = _profile(where, f"{item}.profile", raw["profile"], profiles)
    parent = None if raw.get("parent") is None else _str(where, f"{item}.parent", raw["parent"])
    is_ca = profile.basic_constraints is not None and profile.basic_constraints.ca
    if not is_ca:
        raise where.error(f"{item}.profile", f"profile {profile.name} is not a CA profile")
    if parent is None and not profile.self_signed:
        raise where.error(f"{item}.profile", f"a root (no parent) needs a self-signed profile; "
                                             f"{profile.name} is not")
    if parent is not None and profile.self_signed:
        raise where.error(f"{item}.parent", f"profile {profile.name} is self-signed, so "
                                            f"{name} cannot have a parent")
    spec = AuthoritySpec(name=name, profile=profile.name,
                         key=_key(where, f"{item}.key", raw["key"], profile),
                         subject=_subject(where, f"{item}.subject", raw["subject"], profile),
                         parent=parent,
                         validity_days=_days(where, f"{item}.validity_days",
                                             raw.get("validity_days"), profile),
                         publication=_publication(where, item, raw))
    return spec, item


def _publication(where: _Where, item: str, raw: dict) -> PublicationSettings:
    values: dict[str, timedelta | None] = {}
    for key in _PUBLICATION_KEYS:
        if raw.get(key) is not None:
            try:
                values[key] = parse_duration(_str(where, f"{item}.{key}", raw[key]))
            except ValueError as exc:
                raise where.error(f"{item}.{key}", str(exc)) from None
    try:
        return PublicationSettings(**values)  # type: ignore[arg-type]
    except ValueError as exc:
        field_name = str(exc).split(" ", 1)[0]
        raise where.error(f"{item}.{field_name}", str(exc)) from None


def _service(where: _Where, item: str, entry: object,
             profiles: ProfileSet) -> tuple[ServiceSpec, str]:
    raw = _mapping(where, item, entry, _SERVICE_KEYS,
                   required=("name", "kind", "issuer", "profile", "key", "subject"))
    name = _unit_name(where, f"{item}.name", raw["name"])
    kind = _str(where, f"{item}.kind", raw["kind"])
    if kind not in SERVICE_KINDS:
        raise where.error(f"{item}.kind", f"{kind!r} is not one of {', '.join(SERVICE_KINDS)}")
    profile = _profile(where, f"{item}.profile", raw["profile"], profiles)
    if SERVICE_KINDS[kind] not in profile.extended_key_usage:
        usage = "OCSPSigning" if kind == "ocsp" else "timeStamping"
        raise where.error(f"{item}.profile", f"a {kind} unit needs a profile with the {usage} "
                                             f"extended key usage; {profile.name} has none")
    spec = ServiceSpec(name=name, kind=kind,  # type: ignore[arg-type]
                       issuer=_str(where, f"{item}.issuer", raw["issuer"]),
                       profile=profile.name,
                       key=_key(where, f"{item}.key", raw["key"], profile),
                       subject=_subject(where, f"{item}.subject", raw["subject"], profile),
                       validity_days=_days(where, f"{item}.validity_days",
                                           raw.get("validity_days"), profile))
    return spec, item


def _unit_name(where: _Where, path: str, value: object) -> str:
    name = _str(where, path, value)
    if not _UNIT_NAME.fullmatch(name):
        raise where.error(path, f"{name!r} may hold only letters, digits, '.', '_' and '-' "
                                "(it names URLs and HSM key labels)")
    return name


def _profile(where: _Where, path: str, value: object, profiles: ProfileSet) -> Profile:
    name = _str(where, path, value)
    try:
        return profiles.get(name)
    except ProfileError as exc:
        raise where.error(path, str(exc)) from None


def _key(where: _Where, path: str, value: object, profile: Profile) -> KeySpec:
    try:
        spec = KeySpec.parse(_str(where, path, value))
    except UnsupportedKeyError as exc:
        raise where.error(path, str(exc)) from None
    if not profile.allows_key(spec):
        raise where.error(path, f"profile {profile.name} does not allow {spec} keys (allowed: "
                                f"{', '.join(str(s) for s in profile.key_algorithms)})")
    return spec


def _subject(where: _Where, path: str, value: object, profile: Profile) -> Pairs:
    """A list of single-key mappings or a string; checked by building the Name."""
    try:
        if isinstance(value, str):
            pairs = tuple(parse_subject(value))
        else:
            pairs = tuple(_pair(where, f"{path}[{i}]", entry)
                          for i, entry in enumerate(_list(where, path, value)))
        build_name(profile, pairs)
    except SubjectError as exc:
        raise where.error(path, str(exc)) from None
    return pairs


def _pair(where: _Where, path: str, entry: object) -> tuple[str, str]:
    if not isinstance(entry, dict) or len(entry) != 1:
        raise where.error(path, f"expected one 'NAME: value' mapping, got {entry!r}")
    [(name, value)] = entry.items()
    if not isinstance(value, str):
        raise where.error(path, f"{name}: expected a string, got {value!r} (quote it in YAML)")
    name = _str(where, path, name)
    return canonical_name(name), unicodedata.normalize("NFC", value)


def _days(where: _Where, path: str, value: object, profile: Profile) -> int | None:
    if value is None:
        return None
    days = _int(where, path, value, 1)
    if days > profile.validity.max_days:
        raise where.error(path, f"{days} days exceeds the {profile.validity.max_days} days "
                                f"profile {profile.name} allows")
    return days


# --- whole-spec checks -------------------------------------------------------------------------

def _check_unique(where: _Where, authorities: list[tuple[AuthoritySpec, str]],
                  services: list[tuple[ServiceSpec, str]]) -> None:
    """Names are unique across CAs and units: both label keys on the same token."""
    seen: dict[str, str] = {}
    for spec, item in [*authorities, *services]:
        if spec.name in seen:
            raise where.error(f"{item}.name", f"{spec.name!r} is already used by {seen[spec.name]}")
        seen[spec.name] = item


def _parents_first(where: _Where, authorities: list[tuple[AuthoritySpec, str]]
                   ) -> list[AuthoritySpec]:
    """Order CAs so each parent precedes its children (stable); missing parents and cycles fail."""
    by_name = {spec.name: (spec, item) for spec, item in authorities}
    for spec, item in authorities:
        if spec.parent is not None and spec.parent not in by_name:
            raise where.error(f"{item}.parent", f"no authority {spec.parent!r}"
                                                f"{_hint(spec.parent, by_name)}; known: "
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
