"""The application server's VAPID key (RFC 8292): reading it, its public half for pages,
and the ``Authorization`` header it signs for each push service."""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

__all__ = ["TOKEN_LIFETIME", "VapidKeyError", "VapidSigner", "b64url", "generate_key", "load_key"]

#: Seconds a signed token is valid; RFC 8292 §2 allows at most 24 hours.
TOKEN_LIFETIME = 12 * 3600
_RAW_KEY = re.compile(r"^[A-Za-z0-9_-]{43}=?\Z")


class VapidKeyError(ValueError):
    """The configured VAPID private key cannot be used; the message says why (never the key)."""


def b64url(data: bytes) -> str:
    """Unpadded base64url, the encoding of every key in Web Push."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _from_raw(text: str) -> ec.EllipticCurvePrivateKey:
    raw = base64.urlsafe_b64decode(text.rstrip("=") + "=")
    try:
        return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except ValueError:
        raise VapidKeyError("the raw key is not a valid P-256 private key") from None


def load_key(value: str) -> ec.EllipticCurvePrivateKey:
    """Reads ``web_push.vapid_private_key``: PEM text, a path to a PEM file, or the raw
    32-byte key in base64url.

    Raises:
        VapidKeyError: unreadable, not a key, or not a P-256 key.
    """
    text = value.strip()
    if _RAW_KEY.match(text):
        return _from_raw(text)
    if "-----BEGIN" not in text:
        path = Path(text)
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise VapidKeyError(
                "neither PEM text, nor a readable PEM file, nor a base64url raw key "
                f"({type(exc).__name__})"
            ) from None
    try:
        key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError):
        raise VapidKeyError("not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise VapidKeyError("must be an EC key on the P-256 curve (prime256v1)")
    return key


def generate_key() -> tuple[str, str]:
    """A new key pair: the private key in base64url (the setting's value) and the public
    key in base64url (the pages' ``applicationServerKey``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_numbers().private_value.to_bytes(32, "big")
    return b64url(private), _public(key)


def _public(key: ec.EllipticCurvePrivateKey) -> str:
    return b64url(
        key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    )


class VapidSigner:
    """Signs the VAPID token of each push service origin, reusing one until half its life."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        subject: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # The subject was checked at start-up (config); py_vapid's own check refuses an
        # https URL with a path, which RFC 8292 §2.1 allows.
        self._vapid = Vapid02(key, conf={"no-strict": True})
        self.subject = subject
        #: The public key in base64url, as pages pass it to ``pushManager.subscribe``.
        self.public_key = _public(key)
        self._clock = clock
        self._cache: dict[str, tuple[float, str]] = {}

    def authorization(self, audience: str) -> str:
        """The ``Authorization`` header for a push service at ``audience`` (its origin,
        ``https://host[:port]``)."""
        now = self._clock()
        cached = self._cache.get(audience)
        if cached is not None and cached[0] > now:
            return cached[1]
        exp = int(now) + TOKEN_LIFETIME
        claims = {"aud": audience, "exp": exp, "sub": self.subject}
        try:
            header: str = self._vapid.sign(claims)["Authorization"]
        except binascii.Error as exc:  # pragma: no cover - a key py_vapid cannot encode
            raise VapidKeyError(str(exc)) from None
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[audience] = (now + TOKEN_LIFETIME / 2, header)
        return header
