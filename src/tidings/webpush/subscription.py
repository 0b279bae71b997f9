"""A browser's push subscription (``PushSubscription.toJSON()``), checked, and how it is
kept in the ledger: one entry per user and endpoint."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "AUTH_BYTES",
    "KIND",
    "MAX_ENDPOINT_LENGTH",
    "P256DH_BYTES",
    "PushSubscription",
    "SubscriptionError",
    "SubscriptionLimit",
    "decode_entry",
    "encode_entry",
    "entry_key",
    "parse_subscription",
]

#: The ledger's kind of the push subscriptions' entries.
KIND = "push"
#: Longest endpoint URL accepted (push services' are a few hundred characters).
MAX_ENDPOINT_LENGTH = 2048
#: An uncompressed P-256 point (RFC 8291 §3.1).
P256DH_BYTES = 65
#: The authentication secret (RFC 8291 §3.2).
AUTH_BYTES = 16
_B64URL = re.compile(r"^[A-Za-z0-9_-]+={0,2}\Z")


class SubscriptionError(ValueError):
    """A push subscription was refused; the message says why."""


class SubscriptionLimit(SubscriptionError):
    """A user already has ``web_push.max_subscriptions_per_user`` subscriptions."""


@dataclass(frozen=True, slots=True)
class PushSubscription:
    """Where and for whom a push message is encrypted: the push service's endpoint and the
    browser's keys (base64url, as ``toJSON()`` gives them)."""

    endpoint: str
    p256dh: str
    auth: str

    @property
    def host(self) -> str:
        """The endpoint's host (an IPv6 address without its brackets)."""
        return urlsplit(self.endpoint).hostname or ""

    @property
    def port(self) -> int:
        """The endpoint's port (443 when the URL names none)."""
        parts = urlsplit(self.endpoint)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def audience(self) -> str:
        """The endpoint's origin, the ``aud`` of its VAPID token."""
        parts = urlsplit(self.endpoint)
        return f"{parts.scheme}://{parts.netloc}"

    def to_obj(self) -> dict[str, Any]:
        """The ``toJSON()`` shape, as stored and as pywebpush reads it."""
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


def _key(keys: dict[str, Any], name: str, size: int) -> str:
    value = keys.get(name)
    if not isinstance(value, str) or not _B64URL.match(value):
        raise SubscriptionError(f"keys.{name} must be a base64url string")
    raw = base64.urlsafe_b64decode(value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4))
    if len(raw) != size:
        raise SubscriptionError(f"keys.{name} must be {size} bytes, got {len(raw)}")
    return value.rstrip("=")


def parse_subscription(obj: object, *, allow_private: bool = False) -> PushSubscription:
    """Checks what a page sent: an https endpoint without credentials, a P-256 public key
    and a 16-byte secret. Host names are resolved later (:mod:`.address`); here only an
    address literal is judged.

    Args:
        obj: ``PushSubscription.toJSON()`` as decoded JSON.
        allow_private: ``web_push.allow_private_endpoints``: plain http and non-public
            address literals pass.

    Raises:
        SubscriptionError: the reason, for the page.
    """
    if not isinstance(obj, dict):
        raise SubscriptionError("the subscription must be an object {endpoint, keys}")
    endpoint, keys = obj.get("endpoint"), obj.get("keys")
    if not isinstance(endpoint, str) or not endpoint:
        raise SubscriptionError("endpoint must be a URL")
    if len(endpoint) > MAX_ENDPOINT_LENGTH:
        raise SubscriptionError(f"endpoint is over {MAX_ENDPOINT_LENGTH} characters")
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise SubscriptionError("endpoint is not a valid URL") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise SubscriptionError("endpoint must be an https:// URL")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise SubscriptionError("endpoint must name a host, without user or password")
    if any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in endpoint):
        raise SubscriptionError("endpoint holds spaces, controls or non-ASCII characters")
    if not allow_private:
        try:
            address = ipaddress.ip_address(parts.hostname)
        except ValueError:
            address = None
        if address is not None and not address.is_global:
            raise SubscriptionError("endpoint's host is not a public address")
    if not isinstance(keys, dict):
        raise SubscriptionError("keys must be an object {p256dh, auth}")
    p256dh = _key(keys, "p256dh", P256DH_BYTES)
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), base64.urlsafe_b64decode(p256dh + "=" * (-len(p256dh) % 4))
        )
    except ValueError:
        raise SubscriptionError("keys.p256dh is not a point of the P-256 curve") from None
    auth = _key(keys, "auth", AUTH_BYTES)
    return PushSubscription(endpoint, p256dh, auth)


def entry_key(user: str, endpoint: str) -> str:
    """The ledger key of ``user``'s subscription at ``endpoint``: a digest of both, so that
    it fits the ledger's 255 bytes whatever the user id and does not spell out the
    endpoint (a capability URL). The user is in the value."""
    digest = hashlib.sha256(b"%b\x00%b" % (user.encode(), endpoint.encode()))
    return digest.hexdigest()[:48]


def encode_entry(user: str, subscription: PushSubscription) -> bytes:
    """The ledger value: the user and ``toJSON()``'s shape."""
    return orjson.dumps({"user": user, **subscription.to_obj()})


def decode_entry(value: bytes) -> tuple[str, PushSubscription] | None:
    """The user and subscription of a ledger value; None for one this version cannot read."""
    try:
        obj = orjson.loads(value)
        user = obj["user"]
        if not isinstance(user, str):
            return None
        return user, parse_subscription(obj, allow_private=True)
    except (orjson.JSONDecodeError, TypeError, KeyError, SubscriptionError):
        return None
