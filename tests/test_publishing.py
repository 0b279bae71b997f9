"""Publishing on its own: what is appended to the log, and what is refused."""

from __future__ import annotations

import orjson
import pytest

from tests.fakes import settings
from tidings.clientinfo import ClientInfo
from tidings.codes import ErrorCode
from tidings.config import ChannelOptions
from tidings.log.memory import MemoryLog
from tidings.protocol import operations
from tidings.protocol.operations import PublishCall, Published
from tidings.publishing import PublishError, Publishing
from tidings.record import Record
from tidings.router import CHANNEL_HEADER, INFO_HEADER


def publishing() -> tuple[Publishing, MemoryLog]:
    config = settings()
    event_log = MemoryLog()

    def options(channel: str) -> ChannelOptions | None:
        namespace = channel.rpartition(":")[0]
        return config.namespace(namespace)

    return Publishing(config, event_log, options), event_log


def call(data: bytes, info: bytes = b"{}") -> PublishCall:
    return PublishCall(1, "c-1", "alice", None, channel="news", data=data, info=info)


async def appended(event_log: MemoryLog) -> list[Record]:
    return [r async for batch in event_log.scan(0, event_log.position) for r in batch]


async def test_a_publication_names_its_channels() -> None:
    made, event_log = publishing()
    await made.publish(["news", "public:x"], {"n": 1})
    (record,) = await appended(event_log)
    assert orjson.loads(record.body) == {"n": 1}
    assert record.headers[CHANNEL_HEADER] == "news,public:x"


@pytest.mark.parametrize("channels", [[], ["nosuch:x"], [""]])
async def test_an_invalid_publication_is_refused(channels: list[str]) -> None:
    made, event_log = publishing()
    with pytest.raises(PublishError):
        await made.publish(channels, 1)
    assert event_log.position == 0


async def test_a_client_publication_carries_its_publisher() -> None:
    made, event_log = publishing()
    info = ClientInfo("alice", "c-1")
    assert await made.append(call(b'{"n":1}', info.to_json())) == Published()
    (record,) = await appended(event_log)
    assert record.headers[INFO_HEADER] == info.to_json().decode()


async def test_a_client_publication_over_the_limit_or_refused_by_the_log_is_an_error() -> None:
    made, event_log = publishing()
    outcome = await made.append(call(b"x" * (1 << 20)))
    assert isinstance(outcome, operations.Rejected)
    assert outcome.code == ErrorCode.LIMIT_EXCEEDED
    await event_log.close()
    outcome = await made.append(call(b"1"))
    assert isinstance(outcome, operations.Rejected) and outcome.code == ErrorCode.INTERNAL
