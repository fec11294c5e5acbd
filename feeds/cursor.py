"""Opaque, tamper-evident cursors (pure): base64url(JSON) + '.' + truncated HMAC-SHA256."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
from typing import Any

SIG_BYTES = 16


class CursorError(ValueError):
    pass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@functools.lru_cache(maxsize=8)
def _keyed(key: bytes) -> hmac.HMAC:
    """An HMAC already keyed: copying it skips deriving the pads on every cursor."""
    return hmac.new(key, digestmod=hashlib.sha256)


def _sign(body: bytes, key: bytes) -> bytes:
    mac = _keyed(key).copy()
    mac.update(body)
    return mac.digest()[:SIG_BYTES]


def encode_cursor(payload: dict[str, Any], key: bytes) -> str:
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return f"{_b64(body)}.{_b64(_sign(body, key))}"


def decode_cursor(token: str, key: bytes) -> dict[str, Any]:
    """The payload, or CursorError for anything malformed, truncated or re-signed."""
    try:
        body_part, sig_part = token.split(".")
        body, sig = _unb64(body_part), _unb64(sig_part)
    except (ValueError, UnicodeError) as exc:
        raise CursorError("cursor is malformed") from exc
    expected = _sign(body, key)
    if not hmac.compare_digest(sig, expected):
        raise CursorError("cursor is invalid or was tampered with")
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise CursorError("cursor is malformed") from exc
    if not isinstance(payload, dict):
        raise CursorError("cursor is malformed")
    return payload
