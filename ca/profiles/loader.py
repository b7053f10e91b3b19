"""Profile files -> :class:`~ca.profiles.model.Profile` objects: YAML, ``extends:``, the rules
that span keys.

One file is read and validated alone against :class:`~ca.profiles.schema.ProfileDocument`
(types, unknown keys, per-key rules). What needs the whole inheritance chain happens here, on
the merged values: the subject entries' attribute types and bounds, the keys a concrete
profile must have, and the consistency of CA flags, key usage and extensions. The merge rules
are in :mod:`ca.profiles`'s docstring.

Pure: imports no flask, sqlalchemy or click.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml
from pydantic import ValidationError

from ca import subject as subject_types
from ca.errors import ProfileError, SubjectError
from ca.profiles.model import EKU_NAMES, Profile, SubjectAttributeRule, profile_as_dict, \
    rule_as_dict
from ca.profiles.schema import ProfileDocument, ProfileHeader, SubjectEntryInput, domain_value
from ca.validation import Where, hint, issues, type_name

__all__ = ["ProfileSet", "check_profile_file", "load_profiles", "read_yaml"]

_NOT_INHERITED = ("name", "description", "extends", "abstract", "subject_remove")
_REQUIRED = ("subject", "key_algorithms", "validity", "key_usage")  # for concrete profiles
_INHERITABLE = tuple(k for k in ProfileDocument.model_fields if k not in _NOT_INHERITED)

Resolved = dict[str, Any]
"""What a child inherits: validated top-level values by key (only keys set along the chain);
``subject`` is the resolved entries as :class:`SubjectEntryInput` with every key set."""

# libyaml's safe loader when PyYAML has it: the pure-Python one took a third of the time a
# throwaway hierarchy needs to start (issue 5's 0.5 s budget); same documents, same types.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path) -> dict[str, Any]:
    """The file's top-level mapping; YAML syntax errors become ProfileErrors naming the file."""
    where = Where(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise where.error("", f"cannot read: {exc}") from None
    try:
        data = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise where.error("", f"invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise where.error("", f"expected a mapping at the top, got {type_name(data)}")
    return data


def _header(path: Path, raw: Mapping[str, Any]) -> tuple[str, str | None]:
    """The profile's name (equal to the file stem) and the name of the profile it extends."""
    try:
        header = ProfileHeader.model_validate(raw)
    except ValidationError as exc:
        first = issues(exc, ProfileHeader)[0]
        # a bad name is the file's fault; a bad extends: is the (well-named) profile's
        profile = raw.get("name") if first.loc[:1] == ("extends",) else None
        raise Where(path, profile).error(first.path, first.message) from None
    if header.name != path.stem:
        raise Where(path).error("name", f"{header.name!r} must equal the file name "
                                        f"{path.stem!r}")
    return header.name, header.extends


# --- one file -> one Profile ----------------------------------------------------------------

def _build(path: Path, raw: Mapping[str, Any], parent: Profile | None,
           inherited: Resolved | None = None) -> tuple[Profile, Resolved]:
    """The validated profile, and its resolved values (what a child of it inherits).

    The resolved values hold only keys set somewhere along the ``extends`` chain, so a
    concrete child of an incomplete abstract base is told which required key nobody set.
    """
    name, _ = _header(path, raw)
    where = Where(path, name)
    try:
        document = ProfileDocument.model_validate(raw)
    except ValidationError as exc:
        raise where.invalid(exc, ProfileDocument) from None
    given = {key: getattr(document, key) for key in _INHERITABLE
             if key in document.model_fields_set}
    if parent is None:
        if "subject_remove" in document.model_fields_set:
            raise where.error("subject_remove", "only meaningful with extends")
        values = given
        entries = [(f"subject[{i}]", entry) for i, entry in enumerate(document.subject)]
    else:
        values, entries = _merge(where, parent, inherited or _inheritable(parent), document)
    if not document.abstract:
        for key in _REQUIRED:
            if (key == "subject" and not entries) or (key != "subject" and key not in values):
                raise where.error("", f"missing required key {key!r}" + (
                    f" (not set here nor in {parent.name})" if parent else ""))
    fields = {key: domain_value(key, value) for key, value in values.items()
              if key != "subject"}
    profile = Profile(name=name, source=path, description=document.description,
                      subject=_subject_rules(where, entries), abstract=document.abstract,
                      extends=parent.name if parent else None, **fields)
    _check_consistency(where, profile, values)
    resolved = {k: v for k, v in values.items() if k != "subject"}
    if "subject" in values:
        resolved["subject"] = [SubjectEntryInput(**rule_as_dict(rule))
                               for rule in profile.subject]
    return profile, resolved


def _merge(where: Where, parent: Profile, inherited: Resolved, document: ProfileDocument
           ) -> tuple[Resolved, list[tuple[str, SubjectEntryInput]]]:
    """The child's values laid over the parent's resolved ones (rules in the package docstring).

    Returns the merged top-level values and the subject entries paired with the path to report
    errors under (the child's own index where the child wrote the entry).
    """
    values = {k: v for k, v in inherited.items()}
    values.update({k: getattr(document, k) for k in _INHERITABLE
                   if k in document.model_fields_set})
    if "subject" in inherited or "subject" in document.model_fields_set:
        values["subject"] = True  # marks the key as set; the entries travel separately
    entries: list[tuple[str, SubjectEntryInput]] = [
        (f"subject (inherited from {parent.name}) [{i}]", entry)
        for i, entry in enumerate(inherited.get("subject", []))]
    for i, name in enumerate(document.subject_remove):
        canonical = subject_types.canonical_name(name)
        if not any(entry.name == canonical for _, entry in entries):
            raise where.error(f"subject_remove[{i}]",
                              f"{name} is not in the subject of {parent.name}")
        entries = [(p, e) for p, e in entries if e.name != canonical]
    for i, entry in enumerate(document.subject):
        path = f"subject[{i}]"
        canonical = subject_types.canonical_name(entry.name)
        for index, (_, old) in enumerate(entries):
            if old.name == canonical:  # override key by key, in the parent's position
                update = {key: getattr(entry, key) for key in entry.model_fields_set}
                entries[index] = (path, old.model_copy(update={**update, "name": canonical}))
                break
        else:
            entries.append((path, entry.model_copy(update={"name": canonical})))
    return values, entries


def _inheritable(profile: Profile) -> Resolved:
    """What a child inherits from a profile known only as an object (every field counts)."""
    data = {k: v for k, v in profile_as_dict(profile).items() if k not in ("source", "extends")}
    document = ProfileDocument.model_validate(data)
    return {key: getattr(document, key) for key in _INHERITABLE}


def _subject_rules(where: Where, entries: list[tuple[str, SubjectEntryInput]]
                   ) -> tuple[SubjectAttributeRule, ...]:
    rules: list[SubjectAttributeRule] = []
    for path, entry in entries:
        rule = _subject_rule(where, path, entry)
        if any(r.name == rule.name for r in rules):
            raise where.error(f"{path}.name", f"{rule.name} appears twice; use max_count")
        rules.append(rule)
    return tuple(rules)


def _subject_rule(where: Where, path: str, entry: SubjectEntryInput) -> SubjectAttributeRule:
    """The merged entry against its attribute type: OID, upper bound, fixed value."""
    known = subject_types.attribute_type(entry.name)
    if known is not None:
        oid = known.oid.dotted_string
        if entry.oid is not None and entry.oid != oid:
            raise where.error(f"{path}.oid", f"{entry.name} is {oid}, not {entry.oid}")
        name, ceiling = known.name, known.max_length
    elif entry.oid is not None:
        name, oid, ceiling = entry.name, entry.oid, 128
        other = subject_types.attribute_type_for_oid(oid)
        if other is not None:
            raise where.error(f"{path}.oid", f"{oid} is {other.name}; use that name")
    else:
        known_names = [a.name for a in subject_types.ATTRIBUTES]
        raise where.error(f"{path}.name", f"unknown attribute {entry.name!r}"
                          f"{hint(entry.name, known_names)}; give an oid for a custom attribute")
    max_length = ceiling if entry.max_length is None else entry.max_length
    if max_length > ceiling:
        raise where.error(f"{path}.max_length",
                          f"{max_length} exceeds the upper bound {ceiling} of {name}")
    rule = SubjectAttributeRule(name=name, oid=oid, required=entry.required,
                                max_count=entry.max_count, value=entry.value,
                                patterns=tuple(entry.patterns), max_length=max_length)
    if rule.value is not None:
        try:
            subject_types.check_value(where.profile or "?", rule, rule.value)
        except SubjectError as exc:
            raise where.error(f"{path}.value", str(exc)) from None
    return rule


def _check_consistency(where: Where, profile: Profile, values: Mapping[str, Any]) -> None:
    """Rules that involve more than one field."""
    is_ca = profile.basic_constraints is not None and profile.basic_constraints.ca
    if profile.self_signed and not is_ca:
        raise where.error("self_signed", "a self-signed profile must have basic_constraints "
                                         "ca: true")
    if "keyCertSign" in profile.key_usage and not is_ca:
        raise where.error("key_usage", "keyCertSign needs basic_constraints ca: true")
    if is_ca and "key_usage" in values and "keyCertSign" not in profile.key_usage:
        raise where.error("key_usage", "a CA profile needs keyCertSign")
    if profile.ocsp_nocheck and EKU_NAMES["OCSPSigning"] not in profile.extended_key_usage:
        raise where.error("ocsp_nocheck", "id-pkix-ocsp-nocheck belongs on OCSP responder "
                                          "certificates (extended_key_usage: [OCSPSigning])")
    if profile.extended_key_usage_critical and not profile.extended_key_usage:
        raise where.error("extended_key_usage_critical", "no extended_key_usage to mark")


# --- the set of profiles --------------------------------------------------------------------

class ProfileSet:
    """The loaded profiles by name. Concrete profiles are what it lists, iterates and counts.

    Abstract ones (bases for ``extends:``) are kept for ``get(name, allow_abstract=True)`` and
    :func:`check_profile_file`, never handed out for issuance by default.
    """

    def __init__(self, profiles: Mapping[str, Profile] | list[Profile] | tuple[Profile, ...],
                 *, _resolved: Mapping[str, Resolved] | None = None):
        items = profiles.values() if isinstance(profiles, Mapping) else profiles
        self._profiles: dict[str, Profile] = {p.name: p for p in items}
        self._resolved = dict(_resolved or {})  # what children inherit, keyed by name

    def _inherited(self, name: str) -> Resolved:
        resolved = self._resolved.get(name)
        return dict(resolved) if resolved is not None else _inheritable(self._profiles[name])

    def get(self, name: str, *, allow_abstract: bool = False) -> Profile:
        """The profile called ``name``; ProfileError listing the known names otherwise."""
        profile = self._profiles.get(name)
        if profile is None:
            raise ProfileError(f"no profile {name!r}{hint(name, self._profiles)}; known: "
                               f"{', '.join(self.names()) or 'none'}")
        if profile.abstract and not allow_abstract:
            raise ProfileError(f"profile {name!r} is abstract (a base for extends:); issue from "
                               f"one of: {', '.join(self.names())}")
        return profile

    def names(self) -> list[str]:
        return sorted(n for n, p in self._profiles.items() if not p.abstract)

    def abstract_names(self) -> list[str]:
        return sorted(n for n, p in self._profiles.items() if p.abstract)

    def __iter__(self) -> Iterator[Profile]:
        return iter([self._profiles[n] for n in self.names()])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._profiles \
            and not self._profiles[name].abstract

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"ProfileSet({', '.join(self.names())})"


def load_profiles(directory: Path) -> ProfileSet:
    """Every ``*.yaml`` directly in ``directory`` (not subfolders), resolved and validated.

    One bad file fails the whole load: a CA must not run with half its profiles.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ProfileError(f"{directory}: not a directory of profiles")
    raws: dict[str, tuple[Path, dict[str, Any], str | None]] = {}
    for path in sorted(directory.glob("*.yaml")):
        if path.is_file():
            raw = read_yaml(path)
            name, parent_name = _header(path, raw)
            raws[name] = (path, raw, parent_name)
    resolved: dict[str, Profile] = {}
    inheritance: dict[str, Resolved] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> Profile:
        if name in resolved:
            return resolved[name]
        path, raw, parent_name = raws[name]
        parent = None
        if parent_name is not None:
            if parent_name in chain + (name,):
                cycle = " -> ".join(chain[chain.index(parent_name):] + (name, parent_name)) \
                    if parent_name in chain else f"{name} -> {name}"
                raise Where(path, name).error("extends", f"inheritance cycle {cycle}")
            if parent_name not in raws:
                raise Where(path, name).error(
                    "extends", f"no profile {parent_name!r}{hint(parent_name, raws)}; known: "
                               f"{', '.join(sorted(raws))}")
            parent = resolve(parent_name, chain + (name,))
        resolved[name], inheritance[name] = _build(
            path, raw, parent, inheritance[parent.name] if parent else None)
        return resolved[name]

    for name in raws:
        resolve(name, ())
    return ProfileSet(resolved, _resolved=inheritance)


def check_profile_file(path: Path, base: ProfileSet | None = None) -> Profile:
    """Validate one profile file (``tincay profiles check FILE``); ``extends:`` resolves in base.

    Returns the resolved profile; raises ProfileError like :func:`load_profiles` would.
    """
    path = Path(path)
    raw = read_yaml(path)
    name, parent_name = _header(path, raw)
    parent, inherited = None, None
    if parent_name is not None:
        where = Where(path, name)
        if parent_name == name:
            raise where.error("extends", f"inheritance cycle {name} -> {name}")
        if base is None:
            raise where.error("extends", f"extends {parent_name!r}, but no profiles were given "
                                         "to resolve it against")
        try:
            parent = base.get(parent_name, allow_abstract=True)
        except ProfileError as exc:
            raise where.error("extends", str(exc)) from None
        inherited = base._inherited(parent_name)
    return _build(path, raw, parent, inherited)[0]
