"""The node's own RPC methods of Web Push (``tidings.push.*``): each answer and error code,
without a node or a socket."""

from __future__ import annotations

import orjson
import pytest

from tests.webpush.pushservice import SUBJECT, Browser
from tests.webpush.store import DictStore
from tidings.codes import ErrorCode
from tidings.config import WebPushSettings
from tidings.ledger import LedgerError
from tidings.metrics import Metrics
from tidings.protocol.operations import Answered, Rejected
from tidings.webpush.calls import KEY, SUBSCRIBE, UNSUBSCRIBE, answer
from tidings.webpush.service import WebPush
from tidings.webpush.vapid import generate_key

PRIVATE, PUBLIC = generate_key()
# An address literal: a name would need DNS, which these machines may not have.
ENDPOINT = "https://142.250.1.1/send/abc"


class Nobody:
    def online(self, user: str) -> bool:
        return False


class FailingStore(DictStore):
    async def put(self, kind: str, key: str, value: bytes | None) -> None:
        raise LedgerError("the ledger is not connected")


def web_push(store: DictStore | None = None) -> WebPush:
    settings = WebPushSettings(
        vapid_private_key=PRIVATE, vapid_subject=SUBJECT, max_subscriptions_per_user=1
    )
    return WebPush(settings, store or DictStore(), Metrics(), Nobody(), lambda: ["w"], "w")


def subscription(endpoint: str = ENDPOINT) -> bytes:
    return orjson.dumps(Browser().subscription(endpoint))


def code(outcome: Answered | Rejected) -> int:
    assert isinstance(outcome, Rejected), outcome
    return outcome.code


async def test_key_subscribe_unsubscribe() -> None:
    wp = web_push()
    assert await answer(wp, KEY, "", None) == Answered(orjson.dumps({"key": PUBLIC}))
    assert await answer(wp, SUBSCRIBE, "alice", subscription()) == Answered(b"{}")
    assert [sub.endpoint for _, sub in wp.subscriptions("alice")] == [ENDPOINT]
    body = orjson.dumps({"endpoint": ENDPOINT})
    assert await answer(wp, UNSUBSCRIBE, "alice", body) == Answered(b'{"removed":true}')
    assert await answer(wp, UNSUBSCRIBE, "alice", body) == Answered(b'{"removed":false}')


@pytest.mark.parametrize(
    ("method", "user", "data", "expected"),
    [
        ("tidings.push.other", "alice", None, ErrorCode.METHOD_NOT_FOUND),
        (SUBSCRIBE, "", subscription(), ErrorCode.PERMISSION_DENIED),
        (UNSUBSCRIBE, "", b'{"endpoint":"https://a.example/"}', ErrorCode.PERMISSION_DENIED),
        (SUBSCRIBE, "alice", b"not json", ErrorCode.BAD_REQUEST),
        (SUBSCRIBE, "alice", None, ErrorCode.BAD_REQUEST),
        (SUBSCRIBE, "alice", b"[]", ErrorCode.BAD_REQUEST),
        (SUBSCRIBE, "alice", subscription("http://push.example.com/x"), ErrorCode.BAD_REQUEST),
        (UNSUBSCRIBE, "alice", b'{"endpoint":7}', ErrorCode.BAD_REQUEST),
        (UNSUBSCRIBE, "alice", b"{}", ErrorCode.BAD_REQUEST),
    ],
    ids=[
        "unknown-method",
        "anonymous-subscribe",
        "anonymous-unsubscribe",
        "not-json",
        "no-data",
        "not-an-object",
        "http",
        "endpoint-not-a-string",
        "no-endpoint",
    ],
)
async def test_errors(method: str, user: str, data: bytes | None, expected: ErrorCode) -> None:
    assert code(await answer(web_push(), method, user, data)) == expected


async def test_without_web_push_the_methods_are_not_available() -> None:
    for method in (KEY, SUBSCRIBE, UNSUBSCRIBE):
        assert code(await answer(None, method, "alice", subscription())) == 108
    assert code(await answer(None, "tidings.nothing", "alice", None)) == 104


async def test_over_the_limit_is_106() -> None:
    wp = web_push()
    await answer(wp, SUBSCRIBE, "alice", subscription())
    other = subscription("https://142.250.1.1/send/other")
    assert code(await answer(wp, SUBSCRIBE, "alice", other)) == ErrorCode.LIMIT_EXCEEDED


async def test_a_ledger_that_fails_is_100_temporary() -> None:
    outcome = await answer(web_push(FailingStore()), SUBSCRIBE, "alice", subscription())
    assert outcome == Rejected(100, "the subscription could not be stored; retry", True)
