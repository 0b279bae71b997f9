"""The node's own RPC methods for Web Push, answered as operation outcomes: the client
protocol's ``rpc`` (:class:`~tidings.protocol.operations.NodeRpcCall`) and the HTTP
endpoints of pages without the SDK (``transport/webpush.py``) both answer with them.

===========================  ============================  ==============================
method                       data                          result
===========================  ============================  ==============================
``tidings.push.key``         none                          ``{"key": <VAPID public key>}``
``tidings.push.subscribe``   ``PushSubscription.toJSON()``  ``{}``
``tidings.push.unsubscribe``  ``{"endpoint": "https://…"}``  ``{"removed": true|false}``
===========================  ============================  ==============================

Errors: 104 another ``tidings.*`` method; 108 Web Push is not configured here; 103 the
connection has no user (subscriptions belong to one); 107 the data or the subscription is
refused, the reason in the message; 106 the user has ``web_push.max_subscriptions_per_user``
subscriptions already; 100, temporary, the ledger could not take the write.
"""

from __future__ import annotations

import logging

import orjson

from tidings.codes import ErrorCode
from tidings.ledger import LedgerError
from tidings.protocol.operations import Answered, Rejected
from tidings.webpush.service import WebPush
from tidings.webpush.subscription import SubscriptionError, SubscriptionLimit

__all__ = ["KEY", "METHODS", "SUBSCRIBE", "UNSUBSCRIBE", "answer"]

log = logging.getLogger(__name__)

KEY = "tidings.push.key"
SUBSCRIBE = "tidings.push.subscribe"
UNSUBSCRIBE = "tidings.push.unsubscribe"
METHODS = (KEY, SUBSCRIBE, UNSUBSCRIBE)


def _error(code: ErrorCode, message: str = "", temporary: bool = False) -> Rejected:
    return Rejected(int(code), message or code.message, temporary)


async def answer(
    web_push: WebPush | None, method: str, user: str, data: bytes | None
) -> Answered | Rejected:
    """Answers ``method`` for a connection of ``user`` ("" when anonymous) with ``data``
    (compact JSON, or None); never raises."""
    if method not in METHODS:
        return _error(ErrorCode.METHOD_NOT_FOUND)
    if web_push is None:
        return _error(ErrorCode.NOT_AVAILABLE, "web push is not configured ([web_push])")
    if method == KEY:
        return Answered(orjson.dumps({"key": web_push.public_key}))
    if not user:
        return _error(ErrorCode.PERMISSION_DENIED, "push subscriptions belong to a user")
    try:
        obj = orjson.loads(data) if data is not None else None
    except orjson.JSONDecodeError:  # the codec hands over JSON; the HTTP body may be anything
        return _error(ErrorCode.BAD_REQUEST, "data is not JSON")
    try:
        if method == SUBSCRIBE:
            await web_push.subscribe(user, obj)
            return Answered(b"{}")
        endpoint = obj.get("endpoint") if isinstance(obj, dict) else None
        removed = await web_push.unsubscribe(user, endpoint)
        return Answered(orjson.dumps({"removed": removed}))
    except SubscriptionLimit as exc:
        return _error(ErrorCode.LIMIT_EXCEEDED, str(exc))
    except SubscriptionError as exc:
        return _error(ErrorCode.BAD_REQUEST, str(exc))
    except LedgerError as exc:
        log.warning("push subscription of %r not written: %s", user, exc)
    except Exception:  # the host answers every call; a bug is logged, not raised
        log.exception("%s of %r failed", method, user)
    return _error(ErrorCode.INTERNAL, "the subscription could not be stored; retry", True)
