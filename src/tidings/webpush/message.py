"""One push message: what it says, encrypted for one subscription (RFC 8291, aes128gcm),
and the headers of its request (RFC 8030 §5). Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from pywebpush import WebPusher

from tidings.webpush.subscription import PushSubscription

__all__ = ["MAX_PAYLOAD", "PushRequest", "build_request", "payload"]

#: Largest plaintext one message carries: the 4,096 bytes push services accept (RFC 8030
#: §7.2) less aes128gcm's header (86: salt 16, record size 4, key id length 1, key 65),
#: the record's tag (16) and its padding delimiter (1).
MAX_PAYLOAD = 4096 - 86 - 16 - 1


def payload(channel: str, offset: int, data: bytes) -> tuple[bytes, bool]:
    """The message's plaintext, and whether it is the notice: ``{"channel", "offset",
    "data"}`` with the publication's data; over :data:`MAX_PAYLOAD`, the notice
    ``{"channel", "offset", "truncated": true}`` instead, so that the service worker can
    still say something arrived (and the page fetch it from history)."""
    body = b'{"channel":%b,"offset":%d,"data":%b}' % (orjson.dumps(channel), offset, data)
    if len(body) <= MAX_PAYLOAD:
        return body, False
    return orjson.dumps({"channel": channel, "offset": offset, "truncated": True}), True


@dataclass(frozen=True, slots=True)
class PushRequest:
    """The POST to a subscription's endpoint."""

    url: str
    headers: dict[str, str]
    body: bytes


def build_request(
    subscription: PushSubscription,
    plaintext: bytes,
    *,
    ttl: int,
    urgency: str,
    authorization: str,
) -> PushRequest:
    """Encrypts ``plaintext`` for ``subscription`` with a fresh ephemeral key and salt.

    Args:
        ttl: seconds the push service may keep the message (``TTL``).
        urgency: ``very-low``, ``low``, ``normal`` or ``high`` (``Urgency``).
        authorization: the VAPID header for the endpoint's origin.
    """
    encoded = WebPusher(subscription.to_obj()).encode(plaintext, "aes128gcm")
    body: bytes = encoded["body"]
    headers = {
        "TTL": str(max(0, ttl)),
        "Urgency": urgency,
        "Content-Encoding": "aes128gcm",
        "Content-Type": "application/octet-stream",
        "Authorization": authorization,
    }
    return PushRequest(subscription.endpoint, headers, body)
