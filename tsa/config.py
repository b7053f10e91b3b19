"""How the TSA of a server worker is chosen and configured at start-up: the unit to serve and
its policy from the environment (TINCAY_TSA_*), and the unit's key and chain from the CA's
services. Read once per worker; every value an operator can get wrong is a ConfigurationError
naming the variable."""
from __future__ import annotations

import re
from typing import Mapping

from ca.durations import parse_duration
from ca.errors import ConfigurationError
from ca.services import Authorities
from tsa.core import TimeStampAuthority, TsaPolicy, TsaUnit

_OID = re.compile(r"[0-2](\.(0|[1-9]\d*))+")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


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
    - ``TINCAY_TSA_CHAIN`` (yes/no): put the TSA's issuing chain, without the root, in tokens
      that ask for certificates; ``TINCAY_TSA_NAME`` (yes/no): name the TSA in TSTInfo.

    ConfigurationError naming the variable for anything it cannot use.
    """
    def listed(name: str) -> tuple[str, ...]:
        return _comma_separated(env.get(name, ""))

    def flag(name: str) -> bool:
        value = env.get(name, "").strip().lower()
        if value not in _TRUE + _FALSE:
            raise ConfigurationError(f"{name}={env[name]!r}: use yes or no")
        return value in _TRUE

    def oids(name: str, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            if not _OID.fullmatch(value):
                raise ConfigurationError(f"{name}: {value!r} is not a dotted OID")
        return values

    fields: dict = {"accepted_policies": oids("TINCAY_TSA_POLICIES",
                                              listed("TINCAY_TSA_POLICIES")),
                    "include_chain": flag("TINCAY_TSA_CHAIN"), "tsa_name": flag("TINCAY_TSA_NAME")}
    if env.get("TINCAY_TSA_DEFAULT_POLICY", "").strip():
        [fields["default_policy"]] = oids("TINCAY_TSA_DEFAULT_POLICY",
                                          (env["TINCAY_TSA_DEFAULT_POLICY"].strip(),))
    for name, key, parse in (("TINCAY_TSA_ACCURACY", "accuracy", parse_duration),
                             ("TINCAY_TSA_HASHES", "hashes", _comma_separated)):
        if env.get(name, "").strip():
            try:
                fields[key] = parse(env[name])
                TsaPolicy(**{key: fields[key]})  # its own checks, reported by variable
            except ValueError as exc:
                raise ConfigurationError(f"{name}: {exc}") from None
    return env.get("TINCAY_TSA_UNIT", "").strip() or None, TsaPolicy(**fields)


def _comma_separated(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


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
