"""pytest plugin (entry point ``pytest11: tincay``): throwaway PKIs as fixtures.

    def test_signature(pki):                       # a fresh demo hierarchy for this test
        doctor = pki.issue("clinician", "C=VN, O=BV, CN=A, UID=CCCD:079073009568")

    @pytest.mark.tincay_spec("tests/pki.yaml")     # or a mapping: a hierarchy of your own
    def test_custom(pki): ...

    def test_expired(pki, pki_clock):              # the hierarchy's frozen clock
        pki_clock.advance(datetime.timedelta(days=400))

``pki_session`` is one demo hierarchy shared by the whole session (read-mostly suites).
"""
from __future__ import annotations

from typing import Iterator

import pytest

from ca.clock import FrozenClock
from ca.testing import DEMO_SPEC, Hierarchy

MARKER = "tincay_spec"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(spec): hierarchy spec (path or mapping) for the pki fixture")


@pytest.fixture
def pki(request: pytest.FixtureRequest) -> Iterator[Hierarchy]:
    """A throwaway hierarchy for one test: in-memory keys and database, frozen clock."""
    marker = request.node.get_closest_marker(MARKER)
    spec = marker.args[0] if marker is not None and marker.args else DEMO_SPEC
    with Hierarchy.from_spec(spec) as hierarchy:
        yield hierarchy


@pytest.fixture
def pki_clock(pki: Hierarchy) -> FrozenClock:
    """The clock ``pki`` issues, revokes and answers by: set or advance it to travel in time."""
    return pki.clock


@pytest.fixture(scope="session")
def pki_session() -> Iterator[Hierarchy]:
    """One demo hierarchy for the whole session."""
    with Hierarchy.from_spec(DEMO_SPEC) as hierarchy:
        yield hierarchy
