"""RFC 7512 PKCS#11 URIs, the names by which tincay finds keys: ``pkcs11:token=ca;object=root``.

Only the path attributes tincay uses are understood; ``pin-value`` is rejected outright so a PIN
can never be smuggled into a database row or a config file through a URI.

A subscriber's key wrapped under the HSM's key-encryption key (ca.keys.wrapping) is no token
object and has no PKCS#11 URI: certificates name it ``tincay:subscriber-key:<id>``, the id
of its ``subscriber_keys`` row (:func:`wrapped_uri`, :func:`wrapped_key_id`).
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

from ca.errors import ConfigurationError

_KNOWN = {"token", "object", "type", "id", "manufacturer", "model", "serial", "library-description",
          "library-manufacturer", "library-version", "slot-description", "slot-id",
          "slot-manufacturer"}
_SAFE = "-._~:[]@!$&'()*+,=/"


@dataclass(frozen=True)
class Pkcs11Uri:
    token: str | None
    object: str | None
    type: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Pkcs11Uri":
        if not text.startswith("pkcs11:"):
            raise ConfigurationError(f"not a PKCS#11 URI: {text!r}")
        path = text[len("pkcs11:"):].split("?", 1)
        if len(path) == 2 and any(q.startswith("pin-") for q in path[1].split("&")):
            raise ConfigurationError("PKCS#11 URI must not carry a PIN; use TINCAY_PKCS11_PIN_FILE")
        attrs: dict[str, str] = {}
        for part in filter(None, path[0].split(";")):
            name, sep, value = part.partition("=")
            if not sep or name not in _KNOWN:
                raise ConfigurationError(f"PKCS#11 URI {text!r}: unknown attribute {name!r}")
            attrs[name] = unquote(value)
        return cls(token=attrs.get("token"), object=attrs.get("object"), type=attrs.get("type"))

    def __str__(self) -> str:
        parts = []
        if self.token is not None:
            parts.append(f"token={quote(self.token, safe=_SAFE.replace(';', ''))}")
        if self.object is not None:
            parts.append(f"object={quote(self.object, safe=_SAFE.replace(';', ''))}")
        if self.type is not None:
            parts.append(f"type={self.type}")
        return "pkcs11:" + ";".join(parts)


WRAPPED_URI_PREFIX = "tincay:subscriber-key:"


def wrapped_uri(key_id: int) -> str:
    """The key URI a certificate row names its wrapped subscriber key by."""
    return f"{WRAPPED_URI_PREFIX}{key_id}"


def wrapped_key_id(uri: str) -> int | None:
    """The row id a wrapped-key URI names; None for any other URI (pkcs11:, memory:)."""
    if not uri.startswith(WRAPPED_URI_PREFIX):
        return None
    text = uri[len(WRAPPED_URI_PREFIX):]
    if not text.isdigit():
        raise ConfigurationError(f"key URI {uri!r}: expected {WRAPPED_URI_PREFIX}<id>")
    return int(text)
