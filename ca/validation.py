"""Structured input -> pydantic models; pydantic's errors -> one line an operator can act on.

Every structured input tincay accepts (profile YAML, hierarchy specs, the environment, and the
JSON bodies of the HTTP APIs to come) is described by a pydantic v2 model derived from
:class:`InputModel`: frozen, unknown keys refused, and strict, so ``"365"`` is not quietly
taken for an integer nor ``"yes please"`` for true. Pydantic's own messages (``Input should be
a valid integer``, ``loc: ('validity', 'max_days')``) are written for programmers; this module
is the one place that turns them into the operator's line, e.g.
``validity.max_days: expected an integer, got a string '365'`` or
``subject[1]: unknown key 'requird' (did you mean 'required'?); allowed: ...``.

Domain validators raise :class:`FieldError` (a ValueError) with the finished message; its
``loc`` points below the field the validator sits on, so a list validator can blame one item
(``key_algorithms[1]: ec-p256 listed twice``) and a model validator one field.

Pure: imports no flask, sqlalchemy or click.
"""
from __future__ import annotations

import difflib
import inspect
import types
import unicodedata
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Iterable, Mapping, TypeVar, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from ca.durations import parse_duration
from ca.errors import ConfigurationError, ProfileError, SubjectError
from ca.subject import canonical_name, parse_subject

__all__ = ["DurationVariable", "PositiveDurationVariable", "FieldError", "InputModel", "Issue", "Loc", "NonBlank", "Where",
           "format_loc", "hint", "issues", "read_variables", "subject_pairs", "type_name",
           "variable_text"]

Loc = tuple[str | int, ...]


class InputModel(BaseModel):
    """Base of the input schemas: frozen, closed (unknown keys are errors) and strict.

    A model may set a ``key_order`` ClassVar: the order in which an unknown key's message lists
    the allowed keys, when it should differ from the declaration order (which is the order
    fields are validated in, and so the order of their errors).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class FieldError(ValueError):
    """A domain validator's complaint, already worded for the operator.

    ``loc`` is appended to the location of the value the validator checked, e.g.
    ``FieldError("ec-p256 listed twice", 1)`` raised on ``key_algorithms`` reads
    ``key_algorithms[1]: ec-p256 listed twice``.
    """

    def __init__(self, message: str, *loc: str | int) -> None:
        super().__init__(message)
        self.loc: Loc = loc


def _not_blank(value: str) -> str:
    if not value.strip():
        raise FieldError("must not be empty")
    return value


NonBlank = Annotated[str, AfterValidator(_not_blank)]
"""A string with something in it besides whitespace."""


@dataclass(frozen=True)
class Issue:
    """One validation failure: where (a pydantic loc) and what, in the operator's words."""

    loc: Loc
    message: str

    @property
    def path(self) -> str:
        return format_loc(self.loc)


# --- wording ----------------------------------------------------------------------------------

def type_name(value: object) -> str:
    """``a string``, ``an integer``, ``null``: how YAML/JSON would call the value's type."""
    return {type(None): "null", bool: "a boolean", int: "an integer", float: "a number",
            str: "a string", list: "a list", dict: "a mapping"}.get(type(value),
                                                                  type(value).__name__)


def hint(word: str, candidates: Iterable[Any]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or nothing when none is close."""
    close = difflib.get_close_matches(word, [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def format_loc(loc: Loc) -> str:
    """``('subject', 2, 'patterns', 0)`` -> ``subject[2].patterns[0]``; ``()`` -> ``""``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_EXPECTED = {
    "string_type": "a string", "int_type": "an integer", "bool_type": "true or false",
    "float_type": "a number", "list_type": "a list", "tuple_type": "a list",
    "model_type": "a mapping", "dict_type": "a mapping", "model_attributes_type": "a mapping",
}
_KEY_ERRORS = ("extra_forbidden", "invalid_key", "missing")


def _describe(error: Mapping[str, Any], model: type[BaseModel]) -> Issue:
    """One entry of ``ValidationError.errors()`` in the operator's words."""
    kind, loc, value = error["type"], tuple(error["loc"]), error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = _field_names(model, loc[:-1])
        key = str(loc[-1])
        return Issue(loc[:-1], f"unknown key {key!r}{hint(key, allowed)}; "
                               f"allowed: {', '.join(allowed)}")
    if kind == "invalid_key":
        return Issue(loc[:-1], f"key {value!r} is not a string")
    if kind == "missing":
        return Issue(loc[:-1], f"missing required key {loc[-1]!r}")
    if kind in ("value_error", "assertion_error") and isinstance(ctx.get("error"), Exception):
        exc = ctx["error"]
        return Issue(loc + getattr(exc, "loc", ()), str(exc))
    if kind == "literal_error":
        if not isinstance(value, str):
            return Issue(loc, f"expected a string, got {type_name(value)} {value!r}")
        if not value.strip():
            return Issue(loc, "must not be empty")
        choices = [str(c) for c in get_args(_annotation_at(model, loc))] or [ctx.get("expected")]
        return Issue(loc, f"{value!r} is not one of {', '.join(choices)}{hint(value, choices)}")
    if kind in _EXPECTED:
        return Issue(loc, f"expected {_EXPECTED[kind]}, got {type_name(value)} {value!r}")
    if kind == "greater_than_equal":
        return Issue(loc, f"must be at least {ctx['ge']}, got {value}")
    if kind == "less_than_equal":
        return Issue(loc, f"must be at most {ctx['le']}, got {value}")
    return Issue(loc, str(error["msg"]))  # pragma: no cover - a type no schema here produces


def issues(exc: ValidationError, model: type[BaseModel]) -> list[Issue]:
    """Every failure of ``exc`` (raised validating ``model``), in the order a reader checks.

    Pydantic reports a mapping's unknown and missing keys after its fields' errors; an operator
    (and tincay's hand-written checks before pydantic) looks at a mapping's keys first, then
    into its fields in order. So within one mapping key errors come first, and otherwise the
    order is pydantic's (fields in declaration order, depth first).
    """
    described = [(error, _describe(error, model)) for error in exc.errors()]
    first_seen: dict[Loc, int] = {}
    for index, (error, _) in enumerate(described):
        loc = tuple(error["loc"])
        for depth in range(len(loc) + 1):
            first_seen.setdefault(loc[:depth], index)

    def order(item: tuple[Mapping[str, Any], Issue]) -> tuple[float, ...]:
        error, _ = item
        loc = tuple(error["loc"])
        if error["type"] in _KEY_ERRORS:
            container = loc[:-1]
            rank = -2.0
            if error["type"] == "missing":  # missing keys in the order the schema lists them
                names = _field_names(model, container)
                rank = -1.0 + (names.index(loc[-1]) if loc[-1] in names else 0) / 1000
            return (*(float(first_seen[container[:d]]) for d in range(1, len(container) + 1)),
                    rank)
        return tuple(float(first_seen[loc[:d]]) for d in range(1, len(loc) + 1))

    return [issue for _, issue in sorted(described, key=order)]


# --- the model behind a loc -------------------------------------------------------------------

def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated[...]`` and ``X | None`` down to the type that validates the value."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _annotation_at(model: type[BaseModel], loc: Loc) -> Any:
    """The (unwrapped) annotation validating the value at ``loc``; None when it cannot tell."""
    annotation: Any = model
    for part in loc:
        annotation = _unwrap(annotation)
        if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
            fields = {f.alias or name: f for name, f in annotation.model_fields.items()}
            if part not in fields:
                return None
            annotation = fields[part].annotation
        elif get_origin(annotation) in (list, tuple, set, frozenset) and isinstance(part, int):
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            return None
    return _unwrap(annotation)


def _field_names(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys the mapping at ``loc`` allows: the model's ``key_order`` if it documents one,
    else declaration order."""
    annotation = _annotation_at(model, loc)
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        declared = [f.alias or name for name, f in annotation.model_fields.items()]
        return list(getattr(annotation, "key_order", None) or declared)
    return []  # pragma: no cover - extra keys arise only on models


# --- the operator's line ----------------------------------------------------------------------

@dataclass(frozen=True)
class Where:
    """File (and profile) an error belongs to; builds ``file: profile x: path: message``."""

    source: Path | str
    profile: str | None = None

    def error(self, path: str, message: str) -> ProfileError:
        parts = [str(self.source)]
        if self.profile:
            parts.append(f"profile {self.profile}")
        if path:
            parts.append(path)
        return ProfileError(": ".join(parts) + ": " + message)

    def invalid(self, exc: ValidationError, model: type[BaseModel], *, under: Loc = ()
                ) -> ProfileError:
        """The first of ``exc``'s issues as a ProfileError; ``under`` prefixes its path."""
        first = issues(exc, model)[0]
        return self.error(format_loc(under + first.loc), first.message)


# --- environment variables --------------------------------------------------------------------

# the words an on/off environment variable takes (TINCAY_ACCESS_LOG, TINCAY_TSA_* flags)
SWITCH_ON, SWITCH_OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def variable_text(value: object) -> str | None:
    """An environment variable as set: blank (or only spaces) counts as unset. An environment
    holds strings only; anything else (a mapping an embedding program built) is named."""
    if value is None or isinstance(value, str):
        return (value or "").strip() or None
    raise FieldError(f"expected a string, got {type_name(value)} {value!r}")


def _variable_duration(value: object) -> timedelta | None:
    text = variable_text(value)
    try:
        return None if text is None else parse_duration(text)
    except ValueError as exc:
        raise FieldError(str(exc)) from None


DurationVariable = Annotated[timedelta | None, BeforeValidator(_variable_duration)]
"""A duration variable (``180d``, ``1s``; ca/durations.py), unset when blank."""


def _positive_variable_duration(value: object) -> timedelta | None:
    duration = _variable_duration(value)
    if duration is not None and duration <= timedelta(0):
        raise FieldError("must be longer than 0s")
    return duration


PositiveDurationVariable = Annotated[timedelta | None,
                                     BeforeValidator(_positive_variable_duration)]
"""A duration variable that must be longer than zero (a timeout of 0s would close every
connection before its request), unset when blank."""


Variables = TypeVar("Variables", bound=BaseModel)


def read_variables(model: type[Variables], env: Mapping[str, object]) -> Variables:
    """``env`` (os.environ or a mapping like it) through ``model``, whose fields are aliased
    to the variables' names; ConfigurationError naming the first bad variable:
    ``TINCAY_HOME: expected a string, got an integer 5``. A message that starts with ``=``
    continues the name, for a complaint about the whole value: ``TINCAY_TSA_CHAIN='maybe':
    use yes or no``."""
    try:
        return model.model_validate(dict(env))
    except ValidationError as exc:
        first = issues(exc, model)[0]
        separator = "" if first.message.startswith("=") else ": "
        raise ConfigurationError(f"{first.path}{separator}{first.message}") from None


def subject_pairs(value: Any) -> tuple[tuple[str, str], ...]:
    """A list of single-key mappings or a string for parse_subject -> (name, value) pairs:
    a subject as hierarchy specs and the registration API take it.

    The Name itself is built against the profile afterwards (ca.hierarchy's
    ``_against_profile``, the issuance core).
    """
    if isinstance(value, str):
        try:
            return tuple(parse_subject(value))
        except SubjectError as exc:
            raise FieldError(str(exc)) from None
    if not isinstance(value, list):
        raise FieldError(f"expected a list, got {type_name(value)} {value!r}")
    pairs = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict) or len(entry) != 1:
            raise FieldError(f"expected one 'NAME: value' mapping, got {entry!r}", i)
        [(name, text)] = entry.items()
        if not isinstance(text, str):  # YAML 1.1 reads an unquoted NO as false
            raise FieldError(f"{name}: expected a string, got {text!r} (quote it in YAML)", i)
        if not isinstance(name, str) or not name.strip():
            raise FieldError(f"expected a string, got {type_name(name)} {name!r}"
                             if not isinstance(name, str) else "must not be empty", i)
        pairs.append((canonical_name(name), unicodedata.normalize("NFC", text)))
    return tuple(pairs)
