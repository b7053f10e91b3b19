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


def test_a_ca_near_its_end_is_a_warning_once_and_again_as_it_changes(
        caplog: pytest.LogCaptureFixture) -> None:
    stop = threading.Event()
    said = [["CA x expires in 99 days"], ["CA x expires in 99 days"], ["CA x expires in 98 days"]]

    def one_pass() -> MaintenanceReport:
        warnings = said.pop(0)
        if not said:
            stop.set()
        return MaintenanceReport(warnings=warnings)

    with caplog.at_level(logging.INFO, logger="tincay.maintenance"):
        run_forever(one_pass, timedelta(seconds=0), stop)
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert logged == ["maintenance: CA x expires in 99 days",
                      "maintenance: CA x expires in 98 days"]
