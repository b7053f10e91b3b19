"""A CA's publication policy: how long its CRLs, delta CRLs and OCSP answers are valid.

Its own small module because both ends read it: hierarchy specs set it (ca.hierarchy) and the
store keeps it per CA (ca.store.queries), which every CLI listing imports; neither the store
nor ``tincay ca list`` should pay for the spec loader's pydantic models.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from ca.durations import format_duration


@dataclass(frozen=True)
class PublicationSettings:
    """How long a CA's CRLs, delta CRLs and OCSP answers are valid (nextUpdate - thisUpdate).

    Bounds: a CRL between 1 hour and 366 days; a delta CRL (None: the CA publishes none)
    from 5 minutes up to, not including, the full CRL's validity; OCSP from 1 minute to
    10 days (the CA/Browser Forum's ceiling for subscriber certificates). ValueError
    otherwise, naming the setting.
    """

    crl_validity: timedelta = timedelta(days=7)
    delta_crl_validity: timedelta | None = None
    ocsp_validity: timedelta = timedelta(hours=12)

    def __post_init__(self) -> None:
        _bounded("crl_validity", self.crl_validity, timedelta(hours=1), timedelta(days=366))
        _bounded("ocsp_validity", self.ocsp_validity, timedelta(minutes=1), timedelta(days=10))
        if self.delta_crl_validity is not None:
            if self.delta_crl_validity >= self.crl_validity:
                raise ValueError(f"delta_crl_validity {format_duration(self.delta_crl_validity)}"
                                 f" must be shorter than crl_validity "
                                 f"{format_duration(self.crl_validity)}")
            _bounded("delta_crl_validity", self.delta_crl_validity, timedelta(minutes=5),
                     self.crl_validity - timedelta(seconds=1))

    def describe(self) -> dict[str, str | None]:
        return {"crl_validity": format_duration(self.crl_validity),
                "delta_crl_validity": format_duration(self.delta_crl_validity)
                if self.delta_crl_validity is not None else None,
                "ocsp_validity": format_duration(self.ocsp_validity)}


def _bounded(name: str, value: timedelta, low: timedelta, high: timedelta) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} {format_duration(value)} is outside "
                         f"{format_duration(low)}..{format_duration(high)}")
