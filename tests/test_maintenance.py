"""The maintenance loop outlives an unreachable HSM and stops when told."""
from __future__ import annotations

import logging
import threading
from datetime import timedelta

import pytest

from ca.errors import BackendUnavailableError
from cli.maintenance import MaintenanceReport, run_forever


def test_a_failed_pass_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    stop = threading.Event()
    passes: list[int] = []

    def one_pass() -> MaintenanceReport:
        passes.append(1)
        if len(passes) == 1:
            raise BackendUnavailableError("token not present")
        if len(passes) == 3:
            stop.set()
        return MaintenanceReport(ocsp_responses=2)

    with caplog.at_level(logging.INFO, logger="tincay.maintenance"):
        run_forever(one_pass, timedelta(seconds=0), stop)
    assert len(passes) == 3
    assert "retrying" in caplog.text and "token not present" in caplog.text
    assert "OCSP responses signed: 2" in caplog.text


def test_a_bug_is_not_swallowed() -> None:
    def one_pass() -> MaintenanceReport:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        run_forever(one_pass, timedelta(seconds=0), threading.Event())
