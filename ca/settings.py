"""Settings from the environment, read once at the composition root (CLI or app factory).

Secrets never live in a field that prints: the PIN is read on demand from the environment or a
file, so it cannot leak through a repr, a log line or argv.

The variables are read through a pydantic model (:class:`Environment`), like every structured
input (see :mod:`ca.validation`): an empty variable counts as unset, and a value that is not a
string (a test or an embedding program passing its own mapping) is a ConfigurationError naming
the variable, instead of a TypeError deep inside ``Path``.

Pure: imports no flask, sqlalchemy or click.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Callable, Mapping

from pydantic import BeforeValidator, ConfigDict, Field

from ca.errors import ConfigurationError
from ca.validation import (SWITCH_OFF, SWITCH_ON, DurationVariable, FieldError, InputModel,
                           PositiveDurationVariable, read_variables)

REPO_ROOT = Path(__file__).resolve().parent.parent
CA_EXPIRY_WARNING = timedelta(days=180)  # TINCAY_CA_EXPIRY_WARNING: time to plan a CA's renewal
UNIT_RENEWAL = 2 / 3  # TINCAY_UNIT_RENEWAL: when OCSP and TSA unit certificates are renewed
KEY_CACHE = 1000  # TINCAY_KEY_CACHE: unwrapped subscriber keys a process keeps (ca.keys.wrapping)
BATCH_WORKERS_MAX = 4  # TINCAY_BATCH_WORKERS default: a core left for the main process, at most 4
SAD_LIFETIME = timedelta(minutes=5)  # TINCAY_SAD_LIFETIME: a SAD's life (CSC authorize)
SOFTHSM_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
)


def find_softhsm_module() -> str | None:
    """Where Debian and friends install SoftHSM's PKCS#11 library, if anywhere."""
    for candidate in SOFTHSM_MODULE_CANDIDATES:
        if os.path.exists(candidate):
            return candidate
    return None


@dataclass(frozen=True)
class PinSource:
    """Where the PIN comes from: an environment variable's value or a file's first line."""

    env: Mapping[str, str] = field(repr=False, compare=False)
    default_file: str | None = None  # TINCAY_HOME/pkcs11-pin, used when it exists

    def read(self) -> str:
        pin = self.env.get("TINCAY_PKCS11_PIN")
        if pin:
            return pin
        pin_file = self.env.get("TINCAY_PKCS11_PIN_FILE") or self.default_file
        if pin_file:
            try:
                text = Path(pin_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigurationError(
                    f"TINCAY_PKCS11_PIN_FILE {pin_file}: cannot read ({exc.strerror})"
                ) from None
            pin = text.splitlines()[0].strip() if text.strip() else ""
            if not pin:
                raise ConfigurationError(f"TINCAY_PKCS11_PIN_FILE {pin_file}: file is empty")
            return pin
        raise ConfigurationError(
            "no HSM PIN: set TINCAY_PKCS11_PIN or TINCAY_PKCS11_PIN_FILE"
        )

    @property
    def configured(self) -> bool:
        return bool(self.env.get("TINCAY_PKCS11_PIN") or self.env.get("TINCAY_PKCS11_PIN_FILE")
                    or self.default_file)


def _blank_is_unset(value: object) -> object:
    return None if value == "" else value


Variable = Annotated[str | None, BeforeValidator(_blank_is_unset)]


def _fraction(value: object) -> object:
    """``67%`` or ``0.67`` -> 0.67, strictly between 0 and 1 (a share of a validity)."""
    value = _blank_is_unset(value)
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise FieldError(f"{value!r} is not a share like 67% or 0.67") from None
    if not 0 < number < 1:
        raise FieldError(f"{value!r} must be between 0% and 100%, both excluded")
    return number


class Environment(InputModel):
    """The variables tincay reads; every other variable of the environment is ignored."""

    model_config = ConfigDict(extra="ignore")

    home: Variable = Field(None, alias="TINCAY_HOME")
    database_url: Variable = Field(None, alias="TINCAY_DATABASE_URL")
    pkcs11_module: Variable = Field(None, alias="TINCAY_PKCS11_MODULE")
    pkcs11_token: Variable = Field(None, alias="TINCAY_PKCS11_TOKEN")
    public_url: Variable = Field(None, alias="TINCAY_PUBLIC_URL")
    profiles_dir: Variable = Field(None, alias="TINCAY_PROFILES_DIR")
    ca_expiry_warning: DurationVariable = Field(None, alias="TINCAY_CA_EXPIRY_WARNING")
    unit_renewal: Annotated[float | None, BeforeValidator(_fraction)] = Field(
        None, alias="TINCAY_UNIT_RENEWAL")
    softhsm2_conf: str | None = Field(None, alias="SOFTHSM2_CONF")  # set at all, even empty?



def _count(value: object) -> object:
    """``1000`` -> 1000, at least 1 (a cache bound)."""
    value = _blank_is_unset(value)
    if not isinstance(value, str):
        return value
    if not value.strip().isdigit() or int(value) < 1:
        raise FieldError(f"{value!r} is not a whole number of at least 1")
    return int(value)


def _workers(value: object) -> object:
    """``2`` -> 2; 0 is allowed (no worker processes)."""
    value = _blank_is_unset(value)
    if not isinstance(value, str):
        return value
    if not value.strip().isdigit() or int(value) > 64:
        raise FieldError(f"{value!r} is not a whole number from 0 to 64")
    return int(value)


class ServiceVariables(InputModel):
    """TINCAY_KEY_CACHE, TINCAY_SAD_LIFETIME and TINCAY_BATCH_WORKERS: read by the services of each process that
    are built over a context (the subscriber keys, the credentials), not from
    :class:`Settings`."""

    model_config = ConfigDict(extra="ignore")

    key_cache: Annotated[int | None, BeforeValidator(_count)] = Field(
        None, alias="TINCAY_KEY_CACHE")
    sad_lifetime: PositiveDurationVariable = Field(None, alias="TINCAY_SAD_LIFETIME")
    batch_workers: Annotated[int | None, BeforeValidator(_workers)] = Field(
        None, alias="TINCAY_BATCH_WORKERS")


def service_variables(env: Mapping[str, str] | None = None) -> ServiceVariables:
    """The variables of :class:`ServiceVariables`, checked (ConfigurationError naming the
    variable): ``tincay serve`` calls it before its workers fork and read them."""
    return read_variables(ServiceVariables, dict(os.environ if env is None else env))


def key_cache_size(env: Mapping[str, str] | None = None) -> int:
    """How many unwrapped subscriber keys a process keeps (TINCAY_KEY_CACHE, default 1000)."""
    return service_variables(env).key_cache or KEY_CACHE


def batch_workers(env: Mapping[str, str] | None = None) -> int:
    """How many worker processes ``tincay issue --batch`` checks and prepares CSR rows in
    (TINCAY_BATCH_WORKERS; 0: none, all in the main process). Default: one core left for the
    main process (which commits and signs), at most BATCH_WORKERS_MAX."""
    chosen = service_variables(env).batch_workers
    if chosen is not None:
        return chosen
    return max(0, min(BATCH_WORKERS_MAX, (os.cpu_count() or 1) - 1))


def sad_lifetime(env: Mapping[str, str] | None = None) -> timedelta:
    """How long a SAD from credentials/authorize is good for (TINCAY_SAD_LIFETIME, default
    5 minutes): the window in which the signer's application must send its signHash."""
    return service_variables(env).sad_lifetime or SAD_LIFETIME


LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("debug", "info", "warning", "error")


def _choice(choices: tuple[str, ...]) -> Callable[[object], object]:
    def check(value: object) -> object:
        value = _blank_is_unset(value)
        if isinstance(value, str):
            value = value.strip().lower()
            if value not in choices:
                raise FieldError(f"{value!r} is not one of {', '.join(choices)}")
        return value
    return check


def _switch(value: object) -> object:
    """``on``/``off`` (also yes/no, true/false, 1/0) -> bool."""
    value = _blank_is_unset(value)
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if text in SWITCH_ON:
        return True
    if text in SWITCH_OFF:
        return False
    raise FieldError(f"{value!r} is not on or off")


class LogVariables(InputModel):
    """TINCAY_LOG_FORMAT, TINCAY_LOG_LEVEL and TINCAY_ACCESS_LOG: how the long-running
    commands (``tincay serve``, its workers and maintenance process, ``tincay maintain``)
    log, read by each of those processes (cli/logs.py, web/app.py)."""

    model_config = ConfigDict(extra="ignore")

    format: Annotated[str | None, BeforeValidator(_choice(LOG_FORMATS))] = Field(
        None, alias="TINCAY_LOG_FORMAT")
    level: Annotated[str | None, BeforeValidator(_choice(LOG_LEVELS))] = Field(
        None, alias="TINCAY_LOG_LEVEL")
    access: Annotated[bool | None, BeforeValidator(_switch)] = Field(
        None, alias="TINCAY_ACCESS_LOG")


@dataclass(frozen=True)
class LogSettings:
    """JSON lines by default (one object per line, what a log shipper reads without a
    parser of its own), INFO, and no per-request events: a busy OCSP responder answers
    thousands of requests a second, which its metrics count; the access log is for
    following one client. Errors are logged whatever the access log says (web/metrics.py)."""

    format: str = "json"
    level: str = "info"
    access: bool = False


def log_settings(env: Mapping[str, str] | None = None) -> LogSettings:
    """The log settings of :class:`LogVariables`, checked (ConfigurationError naming the
    variable)."""
    variables = read_variables(LogVariables, dict(os.environ if env is None else env))
    return LogSettings(format=variables.format or "json", level=variables.level or "info",
                       access=bool(variables.access))


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    pkcs11_module: str | None
    pkcs11_token: str
    pin: PinSource
    public_url: str
    profiles_dir: Path
    softhsm_conf: Path | None  # the demo token's config under TINCAY_HOME, if present
    ca_expiry_warning: timedelta = CA_EXPIRY_WARNING  # warn when a CA certificate ends sooner
    unit_renewal: float = UNIT_RENEWAL  # renew OCSP/TSA unit certificates at this share of life

    @property
    def pin_file(self) -> Path:
        """Where the demo keeps its generated PIN (mode 0600) and where we look by default."""
        return self.home / "pkcs11-pin"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        variables = read_variables(Environment, env)
        home = Path(variables.home or "./var").resolve()
        default_pin = home / "pkcs11-pin"
        conf = home / "softhsm" / "softhsm2.conf"
        return cls(
            home=home,
            database_url=variables.database_url or f"sqlite:///{home / 'tincay.db'}",
            pkcs11_module=variables.pkcs11_module or find_softhsm_module(),
            pkcs11_token=variables.pkcs11_token or "tincay",
            pin=PinSource(env, str(default_pin) if default_pin.exists() else None),
            public_url=(variables.public_url or "http://127.0.0.1:8080").rstrip("/"),
            profiles_dir=Path(variables.profiles_dir or REPO_ROOT / "profiles"),
            softhsm_conf=conf if "SOFTHSM2_CONF" not in variables.model_fields_set
            and conf.exists() else None,
            ca_expiry_warning=variables.ca_expiry_warning or CA_EXPIRY_WARNING,
            unit_renewal=variables.unit_renewal or UNIT_RENEWAL,
        )
