"""Who may do what through the registration API: a client's ``role``, ``cas`` and
``profiles`` (set by ``tincay client add``) against the action, the CA and the profile.

- ``ra-officer``: issue, revoke, hold, release and read, only under its ``cas`` and only for
  its ``profiles``. Both lists are needed: an officer registered without them may do nothing
  (an empty list is no restriction only for an admin, so a forgotten ``--ca`` never grants
  every CA). The audit log is not an officer's to read: its events are not all of one CA.
- ``auditor``: read everything (every CA, every profile, the audit log), change nothing.
- ``admin``: everything, within ``cas``/``profiles`` if it was given any.

A client without a role, a disabled one (refused earlier, by its token) or one out of scope
is refused with 403; the core checks before it reads or writes anything.

Pure: imports no flask, sqlalchemy or click.
"""
from __future__ import annotations

from typing import Protocol, Sequence

__all__ = ["ACTIONS", "ROLES", "Forbidden", "Scoped", "allowed_cas", "allowed_profiles",
           "check", "may"]

ISSUE, REVOKE, HOLD, RELEASE, READ, AUDIT = "issue", "revoke", "hold", "release", "read", "audit"
ACTIONS = (ISSUE, REVOKE, HOLD, RELEASE, READ, AUDIT)
ROLES: dict[str, frozenset[str]] = {
    "ra-officer": frozenset({ISSUE, REVOKE, HOLD, RELEASE, READ}),
    "auditor": frozenset({READ, AUDIT}),
    "admin": frozenset(ACTIONS),
}
_UNSCOPED = ("admin", "auditor")  # roles for which an empty list means every CA or profile


class Scoped(Protocol):
    """The caller as the API sees it (ca.services.clients.ClientInfo)."""

    name: str
    role: str | None
    cas: tuple[str, ...]
    profiles: tuple[str, ...]


class Forbidden(Exception):
    """The caller may not do this: the 403's detail."""


def _within(granted: Sequence[str], value: str | None, role: str | None) -> bool:
    if role == "auditor":  # reads every CA and profile, whatever it was registered with
        return True
    if not granted:
        return role in _UNSCOPED
    return value is None or value in granted


def may(caller: Scoped, action: str, ca: str | None = None,
        profile: str | None = None) -> bool:
    """Whether ``caller`` may do ``action`` under ``ca`` for ``profile`` (None: not yet known,
    e.g. a listing's filter, checked again per item)."""
    role = caller.role
    if role not in ROLES or action not in ROLES[role]:
        return False
    return (_within(caller.cas, ca, role)
            and _within(caller.profiles, profile, role))


def check(caller: Scoped, action: str, ca: str | None = None,
          profile: str | None = None) -> None:
    """Forbidden, worded for the client, unless :func:`may`."""
    role = caller.role
    if role not in ROLES:
        raise Forbidden(f"client {caller.name} has no role for the registration API "
                        "(ra-officer, auditor or admin)")
    if action not in ROLES[role]:
        raise Forbidden(f"role {role} may not {action}")
    if not _within(caller.cas, ca, role):
        raise Forbidden(f"client {caller.name} may not act under CA {ca}")
    if not _within(caller.profiles, profile, role):
        raise Forbidden(f"client {caller.name} may not act on profile {profile}")


def allowed_cas(caller: Scoped) -> tuple[str, ...] | None:
    """The CAs a listing is limited to: None for every CA, () for none."""
    if caller.role == "auditor" or (caller.role in _UNSCOPED and not caller.cas):
        return None
    return caller.cas if caller.role in ROLES else ()


def allowed_profiles(caller: Scoped) -> tuple[str, ...] | None:
    """The profiles a listing is limited to: None for every profile, () for none."""
    if caller.role == "auditor" or (caller.role in _UNSCOPED and not caller.profiles):
        return None
    return caller.profiles if caller.role in ROLES else ()
