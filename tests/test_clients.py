"""The platform's client registry and bearer tokens (ca/services/clients.py) on SQLite and
PostgreSQL: secrets shown once and kept only as hashes, tokens that expire, are revoked and die
with a disabled client, and one refusal for every way client authentication fails."""
from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any, Iterator

import pytest
from sqlalchemy import select

from ca.clock import FrozenClock
from ca.errors import (AlreadyExistsError, ExpiredTokenError, InvalidClientError,
                       InvalidTokenError, NotFoundError)
from ca.keys.memory import MemoryBackend
from ca.store.models import AccessToken, ApiClient, AuditEvent
from tests.test_service import NOW, World, make_world
from tests.test_service import profiles  # noqa: F401 - the module-scoped fixture


@pytest.fixture
def world(database_url: str, profiles: Any) -> Iterator[World]:  # noqa: F811
    w = make_world(database_url, MemoryBackend(), profiles, FrozenClock(NOW))
    yield w
    w.service.close()
    w.engine.dispose()


def _rows(world: World, model: type) -> list:
    with world.service.context.read() as session:
        return list(session.scalars(select(model)))


def test_a_client_is_registered_once_and_its_secret_kept_only_as_a_hash(world: World) -> None:
    clients = world.service.clients
    added = clients.add("emr-q11", role="ra-officer", cas=["issuing-ca"], profiles=["clinician"])
    assert added.client.name == "emr-q11" and added.client.active
    assert added.client.cas == ("issuing-ca",) and added.client.profiles == ("clinician",)
    assert len(added.client_secret) >= 40 and len(added.client.client_id) == 32
    [row] = _rows(world, ApiClient)
    assert added.client_secret not in row.secret_hash
    assert row.secret_hash == hashlib.sha256(added.client_secret.encode()).hexdigest()
    with pytest.raises(AlreadyExistsError):
        clients.add("emr-q11")
    with pytest.raises(ValueError, match="client name"):
        clients.add("bad name; drop table")
    assert [c.name for c in clients.list()] == ["emr-q11"]
    [event] = [e for e in _rows(world, AuditEvent) if e.action == "client.add"]
    assert added.client_secret not in (event.details or "") and "emr-q11" in event.details


def test_client_credentials_grant_a_token_that_names_its_client(world: World) -> None:
    clients = world.service.clients
    added = clients.add("school-platform")
    grant = clients.grant(added.client.client_id, added.client_secret)
    assert grant.token_type == "Bearer" and grant.expires_in == 600
    assert clients.verify(grant.access_token).name == "school-platform"
    [row] = _rows(world, AccessToken)
    assert grant.access_token not in row.token_hash
    other = clients.grant(added.client.client_id, added.client_secret)
    assert other.access_token != grant.access_token


@pytest.mark.parametrize("how", ["unknown id", "wrong secret", "empty secret", "disabled"])
def test_every_failed_client_authentication_is_the_same_refusal(world: World, how: str) -> None:
    clients = world.service.clients
    added = clients.add("hr-system")
    client_id, secret = added.client.client_id, added.client_secret
    if how == "unknown id":
        client_id = "0" * 32
    elif how == "wrong secret":
        secret = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    elif how == "empty secret":
        secret = ""
    else:
        clients.disable("hr-system")
    with pytest.raises(InvalidClientError, match="^client authentication failed$"):
        clients.grant(client_id, secret)
    assert _rows(world, AccessToken) == []


def test_tokens_expire_are_revoked_and_die_with_their_client(world: World) -> None:
    clients, clock = world.service.clients, world.service.clock
    added = clients.add("emr")
    first = clients.grant(added.client.client_id, added.client_secret).access_token
    second = clients.grant(added.client.client_id, added.client_secret).access_token
    assert clients.revoke(first) is True and clients.revoke(first) is False
    with pytest.raises(InvalidTokenError) as revoked:
        clients.verify(first)
    assert revoked.value.error == "invalid_token"
    with pytest.raises(InvalidTokenError):
        clients.verify("tct_" + "x" * 43)
    clock.advance(dt.timedelta(minutes=10))
    with pytest.raises(ExpiredTokenError) as expired:
        clients.verify(second)
    assert expired.value.error == "expired_token"
    third = clients.grant(added.client.client_id, added.client_secret).access_token
    assert clients.verify(third).name == "emr"
    clients.disable(added.client.client_id)
    with pytest.raises(InvalidTokenError):
        clients.verify(third)
    assert clients.get("emr").status == "disabled"
    assert clients.purge_expired(clock.now()) == 2  # first and second; third still current
    with pytest.raises(NotFoundError):
        clients.disable("nobody")
