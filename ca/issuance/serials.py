"""Certificate serial numbers: drawn from the OS CSPRNG, and checked before they are used.

Drawing and checking live together so that every serial :func:`new_serial` returns passes
:func:`check_serial` (RFC 5280 4.1.2.2 and the CA/Browser Forum's 64 bits of entropy).
"""
from __future__ import annotations

import secrets

from ca.errors import IssuanceError

SERIAL_MAX_BITS = 159  # 20 octets, top bit clear: RFC 5280 4.1.2.2 positive, <= 20 octets
SERIAL_MIN_BITS = 64  # CA/Browser Forum: at least 64 bits of CSPRNG output


def new_serial() -> int:
    """A fresh serial: 159 bits from the OS CSPRNG, so positive and at most 20 DER octets.

    Redrawn in the (2**-95) case that fewer than 64 significant bits came out, so every serial
    also passes the minimum-entropy check in :func:`ca.issuance.prepare`.
    """
    while True:
        serial = secrets.randbits(SERIAL_MAX_BITS)
        if serial.bit_length() >= SERIAL_MIN_BITS:
            return serial


def check_serial(serial: int) -> None:
    """Refuse a serial that is not a positive int of 64 to 159 significant bits."""
    if isinstance(serial, bool) or not isinstance(serial, int):
        raise TypeError("serial must be an int")
    if serial <= 0:
        raise IssuanceError(f"serial {serial} must be positive (RFC 5280 4.1.2.2)")
    if serial.bit_length() > SERIAL_MAX_BITS:
        raise IssuanceError(f"serial {serial:x} does not fit in 20 octets (RFC 5280 4.1.2.2)")
    if serial.bit_length() < SERIAL_MIN_BITS:
        raise IssuanceError(f"serial {serial:x} has fewer than {SERIAL_MIN_BITS} significant "
                            "bits: use new_serial()")
