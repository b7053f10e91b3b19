"""How the TSA of a server worker is chosen and configured at start-up: the unit to serve and
its policy from the environment (TINCAY_TSA_*), and the unit's key and chain from the CA's
services. Read once per worker; every value an operator can get wrong is a ConfigurationError
naming the variable."""
from __future__ import annotations

import re
from typing import Annotated, Any, Mapping

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field

from ca.errors import ConfigurationError
from ca.services import Authorities
from ca.validation import (DurationVariable, FieldError, InputModel, read_variables,
                           variable_text)
from tsa.core import TimeStampAuthority, TsaPolicy, TsaUnit

_OID = re.compile(r"[0-2](\.(0|[1-9]\d*))+")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _listed(value: Any) -> Any:
    """``a, b,c`` -> ("a", "b", "c"); unset stays None (so "," is an empty list, not unset)."""
    value = variable_text(value)
    return None if value is None else tuple(item.strip() for item in value.split(",")
                                            if item.strip())


def _flag(value: Any) -> bool | None:
    """yes/no (and 1/0, true/false, on/off); None when unset or blank: TsaPolicy's default."""
    text = variable_text(value)
    if text is None:
        return None
    if text.lower() not in _TRUE + _FALSE:
        raise FieldError(f"={value!r}: use yes or no")  # read_variables: NAME='maybe': ...
    return text.lower() in _TRUE


def _oids(values: tuple[str, ...] | None) -> tuple[str, ...] | None:
    for value in values or ():
        if not _OID.fullmatch(value):
            raise FieldError(f"{value!r} is not a dotted OID")
    return values


def _oid(value: str | None) -> str | None:
    return _oids((value,))[0] if value is not None else None  # type: ignore[index]


Text = Annotated[str | None, BeforeValidator(variable_text)]
Flag = Annotated[bool | None, BeforeValidator(_flag)]
Listed = Annotated[tuple[str, ...] | None, BeforeValidator(_listed)]


class TsaEnvironment(InputModel):
    """The TINCAY_TSA_* variables of a server worker; every other variable is ignored."""

    model_config = ConfigDict(extra="ignore")

    unit: Text = Field(None, alias="TINCAY_TSA_UNIT")
    accuracy: DurationVariable = Field(None, alias="TINCAY_TSA_ACCURACY")
    default_policy: Annotated[Text, AfterValidator(_oid)] = Field(
        None, alias="TINCAY_TSA_DEFAULT_POLICY")
    accepted_policies: Annotated[Listed, AfterValidator(_oids)] = Field(
        None, alias="TINCAY_TSA_POLICIES")
    hashes: Listed = Field(None, alias="TINCAY_TSA_HASHES")
    include_chain: Flag = Field(None, alias="TINCAY_TSA_CHAIN")
    tsa_name: Flag = Field(None, alias="TINCAY_TSA_NAME")


def tsa_settings(env: Mapping[str, str]) -> tuple[str | None, TsaPolicy]:
    """The TSA unit to serve and how it answers, from the environment (read at worker start):

    - ``TINCAY_TSA_UNIT``: the TSA unit's name (default: the first one created);
    - ``TINCAY_TSA_ACCURACY``: ``1s`` (default) down to ``1us``; genTime carries as many
      fraction digits as the accuracy warrants;
    - ``TINCAY_TSA_DEFAULT_POLICY``: the policy OID of tokens whose request names none
      (default: the TSA certificate's first policy);
    - ``TINCAY_TSA_POLICIES``: further policy OIDs a request may ask for, comma-separated;
    - ``TINCAY_TSA_HASHES``: accepted imprint hashes (default ``sha256,sha384,sha512``; add
      ``sha1`` only for legacy clients);
    - ``TINCAY_TSA_CHAIN`` (yes, the default, or no): tokens that ask for certificates carry
      the TSA's issuing chain without the root, or (no) the TSA certificate only;
      ``TINCAY_TSA_NAME`` (yes/no, default no): name the TSA in TSTInfo.

    ConfigurationError naming the variable for anything it cannot use.
    """
    variables = read_variables(TsaEnvironment, env)
    fields: dict[str, Any] = {"accepted_policies": variables.accepted_policies or ()}
    for key in ("include_chain", "tsa_name"):  # unset: TsaPolicy's default
        if getattr(variables, key) is not None:
            fields[key] = getattr(variables, key)
    if variables.default_policy is not None:
        fields["default_policy"] = variables.default_policy
    for name, key, value in (("TINCAY_TSA_ACCURACY", "accuracy", variables.accuracy),
                             ("TINCAY_TSA_HASHES", "hashes", variables.hashes)):
        if value is not None:
            try:
                TsaPolicy(**{key: value})  # the policy's own checks, reported by variable
            except ValueError as exc:
                raise ConfigurationError(f"{name}: {exc}") from None
            fields[key] = value
    return variables.unit, TsaPolicy(**fields)


def timestamp_authority(authorities: Authorities, unit: str | None = None,
                        policy: TsaPolicy | None = None) -> TimeStampAuthority | None:
    """The TSA for the unit named ``unit`` (default: the first TSA unit), None if there is
    no TSA unit at all; ConfigurationError if ``unit`` names none."""
    units = [u for u in authorities.service_units("tsa") if unit is None or u.name == unit]
    if not units:
        if unit is not None:
            raise ConfigurationError(f"TINCAY_TSA_UNIT: no TSA unit named {unit!r}")
        return None
    chosen = units[0]
    return TimeStampAuthority(
        TsaUnit(chosen.name, chosen.certificate,
                authorities.signing_key(chosen.key_uri, chosen.certificate),
                tuple(chosen.chain)),
        policy or TsaPolicy(), authorities.context.clock)


def refreshed_authority(authorities: Authorities, current: TimeStampAuthority | None,
                        unit: str | None = None, policy: TsaPolicy | None = None
                        ) -> TimeStampAuthority | None:
    """``current`` while its unit still has the same certificate, else the TSA over the
    unit's current certificate and key (renewed by ca.services.renewal): a few reads when
    nothing changed, cheap enough for a worker to ask every half minute."""
    units = [u for u in authorities.service_units("tsa") if unit is None or u.name == unit]
    if current is not None and units and units[0].certificate == current.unit.certificate:
        return current
    return timestamp_authority(authorities, unit, policy or
                               (current.policy if current is not None else None))
