"""Keeping published status fresh on a timer: CRLs (complete and delta) and the pre-produced
OCSP answers, each renewed at half its validity.

``tincay serve`` runs this in a process of its own beside the gunicorn workers (its own HSM
session, DESIGN.md 5); ``tincay maintain`` runs it alone, for the one host of a multi-host
deployment that should publish, or from cron with ``--once``.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable

from sqlalchemy.exc import SQLAlchemyError

from ca.errors import DatabaseUnavailableError, TincayError
from ca.services import CrlInfo, Publication

log = logging.getLogger("tincay.maintenance")


@dataclass
class MaintenanceReport:
    """What one pass published."""

    crls: list[CrlInfo] = field(default_factory=list)
    ocsp_responses: int = 0
    warnings: list[str] = field(default_factory=list)  # CAs near the end of their certificate
    renewed: list[str] = field(default_factory=list)  # service units with a new certificate
    checkpoints: list[str] = field(default_factory=list)  # logs' heads signed ("audit@12")
    publishes: bool = True  # False for a pass that only renews the TLS certificate

    def as_dict(self) -> dict[str, Any]:
        return {"crls": [{"ca": c.ca, "number": c.number, "delta_base": c.delta_base,
                          "entries": c.entries, "next_update": c.next_update}
                         for c in self.crls],
                "ocsp_responses": self.ocsp_responses, "warnings": self.warnings,
                "renewed": self.renewed, "checkpoints": self.checkpoints}

    def summary(self) -> str:
        if not self.publishes:
            return f"TLS certificate renewed: {', '.join(self.renewed)}" if self.renewed \
                else "TLS certificate not due for renewal"
        crls = ", ".join(f"{c.ca} {'delta ' if c.delta_base else ''}#{c.number}"
                         for c in self.crls) or "none due"
        renewed = f"; renewed: {', '.join(self.renewed)}" if self.renewed else ""
        signed = f"; checkpoints: {', '.join(self.checkpoints)}" if self.checkpoints else ""
        return (f"CRLs published: {crls}; OCSP responses signed: {self.ocsp_responses}"
                f"{renewed}{signed}")


def run_once(publication: Publication, refresh_ocsp: Callable[[], int],
             warnings: Callable[[], list[str]] = list,
             renew: Callable[[], list[str]] = list,
             checkpoint: Callable[[], list[str]] = list) -> MaintenanceReport:
    """One pass: the service units due for a new certificate first (so what follows signs
    with it), CRLs (a relying party may fetch them any time), OCSP answers, the CAs whose
    certificates end soon, then a signed checkpoint of each log whose head moved
    (ca.services.audit_chain), last so it covers what the pass itself logged."""
    renewed = renew()
    report = MaintenanceReport(crls=publication.publish_due_crls(), renewed=renewed)
    report.ocsp_responses = refresh_ocsp()
    report.warnings = warnings()
    report.checkpoints = checkpoint()
    return report


def run_forever(one_pass: Callable[[], MaintenanceReport], interval: timedelta,
                stop: threading.Event) -> None:
    """Run ``one_pass`` every ``interval`` until ``stop`` is set.

    A pass that fails because the HSM or the database is unreachable is logged with its cause
    and retried at the next tick: the loop outlives an HSM restart. Anything else is a bug and
    ends the loop loudly.
    """
    warned: set[str] = set()
    while not stop.is_set():
        try:
            report = one_pass()
            level = logging.INFO if report.crls or report.ocsp_responses or report.renewed \
                or report.checkpoints else logging.DEBUG
            log.log(level, "maintenance: %s", report.summary())
            for warning in report.warnings:
                if warning not in warned:  # once per process, and again as the days go by
                    log.warning("maintenance: %s", warning)
            warned = set(report.warnings)
        except DatabaseUnavailableError as exc:  # the store logged the outage once
            log.debug("maintenance pass failed, retrying in %s: %s", interval, exc)
        except (TincayError, SQLAlchemyError, OSError) as exc:
            log.error("maintenance pass failed, retrying in %s: %s", interval, exc)
        stop.wait(interval.total_seconds())
