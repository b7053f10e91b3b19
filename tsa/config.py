"""How the TSA of a server worker is chosen and configured at start-up: the unit to serve and
its policy from the environment (TINCAY_TSA_*), and the unit's key and chain from the CA's
services. Read once per worker; every value an operator can get wrong is a ConfigurationError
naming the variable."""
from __future__ import annotations

import logging
import re
import shlex
from datetime import timedelta
from typing import Annotated, Any, Literal, Mapping

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field

from ca.errors import ConfigurationError
from ca.services import Authorities, TokenLog
from ca.validation import (SWITCH_OFF, SWITCH_ON, DurationVariable, FieldError, InputModel,
                           read_variables, variable_text)
from tsa.clock_sync import ClockCheck, ClockGuard, ClockReading, clock_source
from tsa.core import TimeStampAuthority, TsaPolicy, TsaUnit
from tsa.gen_time import HostMark

log = logging.getLogger("tincay.tsa")

_MICROSECOND = timedelta(microseconds=1)
_OID = re.compile(r"[0-2](\.(0|[1-9]\d*))+")


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
    if text.lower() not in SWITCH_ON + SWITCH_OFF:
        raise FieldError(f"={value!r}: use yes or no")  # read_variables: NAME='maybe': ...
    return text.lower() in SWITCH_ON


def _oids(values: tuple[str, ...] | None) -> tuple[str, ...] | None:
    for value in values or ():
        if not _OID.fullmatch(value):
            raise FieldError(f"{value!r} is not a dotted OID")
    return values


def _command(value: Any) -> tuple[str, ...] | None:
    text = variable_text(value)
    if text is None:
        return None
    try:
        return tuple(shlex.split(text))
    except ValueError as exc:  # an unclosed quote
        raise FieldError(f"={value!r}: {exc}") from None


def _mode(value: Any) -> str | None:
    text = variable_text(value)
    return None if text is None else text.lower()


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
    clock_check: Annotated[Literal["off", "kernel", "command"] | None,
                           BeforeValidator(_mode)] = Field(None, alias="TINCAY_TSA_CLOCK_CHECK")
    clock_command: Annotated[tuple[str, ...] | None, BeforeValidator(_command)] = Field(
        None, alias="TINCAY_TSA_CLOCK_COMMAND")
    clock_margin: DurationVariable = Field(None, alias="TINCAY_TSA_CLOCK_MARGIN")
    clock_interval: DurationVariable = Field(None, alias="TINCAY_TSA_CLOCK_INTERVAL")
    mark_file: Text = Field(None, alias="TINCAY_TSA_MARK_FILE")


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
      ``TINCAY_TSA_NAME`` (yes/no, default no): name the TSA in TSTInfo;
    - ``TINCAY_TSA_CLOCK_CHECK`` (off, the default; kernel; command), with
      ``TINCAY_TSA_CLOCK_COMMAND``, ``TINCAY_TSA_CLOCK_MARGIN`` (default 0s) and
      ``TINCAY_TSA_CLOCK_INTERVAL`` (default 1s): whether tokens wait for a synchronised
      clock (tsa/clock_sync.py);
    - ``TINCAY_TSA_MARK_FILE``: the file through which the workers of one host share their
      genTime mark (tsa/gen_time.py; ``tincay serve`` sets one under TINCAY_HOME).

    ConfigurationError naming the variable for anything it cannot use.
    """
    variables = read_variables(TsaEnvironment, env)
    fields: dict[str, Any] = {"accepted_policies": variables.accepted_policies or (),
                              "clock": _clock_check(variables)}
    for key in ("include_chain", "tsa_name"):  # unset: TsaPolicy's default
        if getattr(variables, key) is not None:
            fields[key] = getattr(variables, key)
    if variables.default_policy is not None:
        fields["default_policy"] = variables.default_policy
    _checked(TsaPolicy, fields, (("TINCAY_TSA_ACCURACY", "accuracy", variables.accuracy),
                                 ("TINCAY_TSA_HASHES", "hashes", variables.hashes)))
    try:
        policy = TsaPolicy(**fields)
    except ValueError as exc:  # the margin against the accuracy
        raise ConfigurationError(f"TINCAY_TSA_CLOCK_MARGIN: {exc}") from None
    return variables.unit, policy


def _clock_check(variables: TsaEnvironment) -> ClockCheck:
    mode = variables.clock_check or "off"
    if mode == "command" and not variables.clock_command:
        raise ConfigurationError("TINCAY_TSA_CLOCK_COMMAND: not set, and "
                                 "TINCAY_TSA_CLOCK_CHECK=command needs it")
    fields: dict[str, Any] = {"mode": mode, "command": variables.clock_command or (),
                              "mark_file": variables.mark_file}
    _checked(ClockCheck, fields, (("TINCAY_TSA_CLOCK_MARGIN", "margin", variables.clock_margin),
                                  ("TINCAY_TSA_CLOCK_INTERVAL", "every",
                                   variables.clock_interval)))
    return ClockCheck(**fields)


def _checked(kind: type, fields: dict[str, Any],
             values: tuple[tuple[str, str, Any], ...]) -> None:
    """Each set (variable, field, value) into ``fields``, first through ``kind``'s own checks
    alone, so a refusal names its variable."""
    for name, key, value in values:
        if value is not None:
            try:
                kind(**{key: value})
            except ValueError as exc:
                raise ConfigurationError(f"{name}: {exc}") from None
            fields[key] = value


def timestamp_authority(authorities: Authorities, unit: str | None = None,
                        policy: TsaPolicy | None = None, *,
                        previous: TimeStampAuthority | None = None
                        ) -> TimeStampAuthority | None:
    """The TSA for the unit named ``unit`` (default: the first TSA unit), None if there is
    no TSA unit at all; ConfigurationError if ``unit`` names none. Its genTime mark starts at
    the latest genTime the unit's log holds. ``previous``: the TSA this one replaces (the
    unit renewed), whose clock guard (so no second transition event), mark file and genTime
    mark carry over."""
    units = [u for u in authorities.service_units("tsa") if unit is None or u.name == unit]
    if not units:
        if unit is not None:
            raise ConfigurationError(f"TINCAY_TSA_UNIT: no TSA unit named {unit!r}")
        return None
    chosen = units[0]
    policy = policy or TsaPolicy()
    if previous is not None and previous.unit.name != chosen.name:
        previous = None
    authority = TimeStampAuthority(
        TsaUnit(chosen.name, chosen.certificate,
                authorities.signing_key(chosen.key_uri, chosen.certificate),
                tuple(chosen.chain)),
        policy, authorities.context.clock,
        clock_guard=previous.clock_guard if previous is not None else
        _clock_guard(authorities, chosen.name, policy),
        not_before=TokenLog(authorities.context).latest_gen_time(chosen.name),
        host_mark=previous.gen_times.host if previous is not None else
        _host_mark(policy.clock.mark_file))
    if previous is not None:
        authority.gen_times.raise_to(previous.gen_times.mark)
    return authority


def _host_mark(path: str | None) -> HostMark | None:
    if path is None:
        return None
    try:
        return HostMark(path)
    except ValueError as exc:
        raise ConfigurationError(f"TINCAY_TSA_MARK_FILE: {exc}") from None


def _clock_guard(authorities: Authorities, unit: str, policy: TsaPolicy) -> ClockGuard | None:
    """The guard of ``policy.clock``, whose transitions become audit events of ``unit``."""
    source = clock_source(policy.clock, policy.accuracy)
    if source is None:
        log.info("TSA unit %s: the clock check is off (TINCAY_TSA_CLOCK_CHECK)", unit)
        return None
    log.info("TSA unit %s: tokens only while the clock is in sync (%s check)", unit,
             policy.clock.mode)
    return ClockGuard(source, every=policy.clock.every.total_seconds(),
                      on_change=lambda reading: _record_transition(authorities, unit, reading))


def _record_transition(authorities: Authorities, unit: str, reading: ClockReading) -> None:
    details: dict[str, Any] = {"reason": reading.reason}
    for key, value in (("max_error_us", reading.max_error),
                       ("estimated_error_us", reading.estimated_error)):
        if value is not None:
            details[key] = value // _MICROSECOND
    TokenLog(authorities.context).record_event(
        "tsa.clock_synchronised" if reading.synchronised else "tsa.clock_unsynchronised",
        unit, details)


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
                               (current.policy if current is not None else None),
                               previous=current)
