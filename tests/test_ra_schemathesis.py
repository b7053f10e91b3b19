"""The registration API against its own OpenAPI document, by Schemathesis: property-based
requests generated from /api/v1/openapi.json (valid ones, and ones that break the schema on
purpose), sent over real HTTP on loopback with an admin client's bearer token.

Every answer must be no 5xx (``not_a_server_error``), a status the document lists for the
operation (``status_code_conformance``), and a body that validates against the schema the
document gives for that status and content type (``response_schema_conformance``): the
document is generated from the models the core answers through, and this is what proves
the two agree for inputs nobody thought to write a test for. The number of examples is
bounded so the run stays well under two minutes on a shared 2-core machine.
"""
from __future__ import annotations

import json
import urllib.request
from typing import Any, Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from ca.testing import Hierarchy
from ra.openapi import document
from tests.test_ra_api import _port, spec

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, str]]:
    """The app on loopback over a throwaway hierarchy, and an admin client's token."""
    with Hierarchy.from_spec(spec(), port=_port()) as pki, pki.serve() as url:
        added = pki.service.clients.add("schemathesis", role="admin")
        grant = pki.service.clients.grant(added.client.client_id, added.client_secret)
        yield url, grant.access_token


# The document as ra.openapi builds it, loaded at collection (it is pure: no server needed);
# test_the_served_document_is_this_one proves it is what /api/v1/openapi.json serves.
# schemathesis.pytest.from_fixture (loading it from the served app) fails under pytest 9.2:
# its lazy loader reads request.node._nodeid, which pytest 9 no longer has.
schema = schemathesis.openapi.from_dict(document())


def test_the_served_document_is_this_one(served: tuple[str, str]) -> None:
    url, _ = served
    with urllib.request.urlopen(f"{url}/api/v1/openapi.json", timeout=30) as response:
        assert json.loads(response.read()) == schema.raw_schema


@schema.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_the_api_keeps_to_its_document(case: Any, served: tuple[str, str]) -> None:
    url, token = served
    case.call_and_validate(base_url=url, headers={"Authorization": f"Bearer {token}"},
                           checks=CHECKS, timeout=30)
