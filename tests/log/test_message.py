"""Stream messages: one shape for both protocols, and decoding them into records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import rstream
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec
from pamqp.header import ContentHeader
from rstream import Properties

from tidings.log.control import Beacon, Marker
from tidings.log.message import (
    StreamMessage,
    control_of,
    decode,
    fingerprint,
    from_delivery,
    normalise_headers,
)
from tidings.log.stream_protocol import message_of

STREAM = "tidings.log"


def delivered(
    offset: int,
    body: bytes = b"{}",
    *,
    exchange: str = "app",
    routing_key: str = "invoice.paid",
    headers: dict[str, Any] | None = None,
    timestamp: datetime | None = None,
    message_id: str | None = None,
) -> DeliveredMessage:
    """A message as aiormq delivers it from a stream over AMQP 0-9-1."""
    properties = spec.Basic.Properties(
        headers={**(headers or {}), "x-stream-offset": offset},
        timestamp=timestamp,
        message_id=message_id,
    )
    return DeliveredMessage(
        delivery=spec.Basic.Deliver(
            consumer_tag="c", delivery_tag=offset + 1, exchange=exchange, routing_key=routing_key
        ),
        header=ContentHeader(body_size=len(body), properties=properties),
        body=body,
        channel=None,  # type: ignore[arg-type]  # nothing here touches the channel
    )


def read(offset: int, body: bytes = b"{}", **kwargs: Any) -> StreamMessage:
    message = from_delivery(delivered(offset, body, **kwargs))
    assert message is not None
    return message


def amqp10(
    body: bytes,
    *,
    exchange: bytes = b"app",
    routing_key: bytes = b"invoice.paid",
    properties: dict[bytes, Any] | None = None,
    creation_time: int | None = None,
    message_id: bytes | None = None,
) -> rstream.AMQPMessage:
    """The same message as the stream protocol hands it out: AMQP 1.0, text as bytes."""
    return rstream.AMQPMessage(
        body=body,
        application_properties=properties,
        properties=Properties(creation_time=creation_time, message_id=message_id),
        message_annotations={b"x-exchange": exchange, b"x-routing-key": routing_key},
    )


def test_an_amqp_delivery_becomes_a_stream_message_without_the_offset_header() -> None:
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    message = read(7, b"x", headers={"a": "b"}, timestamp=stamp, message_id="m-1")
    assert message == StreamMessage(
        7, "app", "invoice.paid", b"x", {"a": "b"}, stamp.timestamp(), "m-1"
    )


def test_a_delivery_without_an_offset_is_not_a_stream_message() -> None:
    plain = delivered(0)
    headers = plain.header.properties.headers
    assert headers is not None
    del headers["x-stream-offset"]
    assert from_delivery(plain) is None


def test_both_protocols_give_the_same_message_and_fingerprint() -> None:
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    over_amqp = read(
        3,
        b"body",
        headers={"x-tidings-channel": "user#1", "n": 5},
        timestamp=stamp,
        message_id="id",
    )
    over_stream = message_of(
        amqp10(
            b"body",
            properties={b"x-tidings-channel": b"user#1", b"n": 5},
            creation_time=int(stamp.timestamp()) * 1000,
            message_id=b"id",
        ),
        3,
    )
    assert over_stream == over_amqp
    assert fingerprint(over_stream) == fingerprint(over_amqp)


def test_header_order_does_not_change_the_fingerprint() -> None:
    one = StreamMessage(1, "", "k", b"", {"a": 1, "b": 2})
    other = StreamMessage(1, "", "k", b"", {"b": 2, "a": 1})
    assert fingerprint(one) == fingerprint(other)
    assert fingerprint(one) != fingerprint(StreamMessage(1, "", "k", b"", {"a": 1, "c": 2}))
    assert fingerprint(one) != fingerprint(StreamMessage(1, "", "k", b"x", {"a": 1, "b": 2}))


def test_a_stream_message_with_several_data_sections_is_joined() -> None:
    message = rstream.AMQPMessage(body=[b"ab", b"cd"])
    assert message_of(message, 0).body == b"abcd"


def test_headers_that_are_not_utf8_stay_bytes() -> None:
    assert normalise_headers({b"k": b"\xff", "s": "t", b"n": 1}) == {"k": b"\xff", "s": "t", "n": 1}


def test_records_get_offset_plus_one_and_keep_their_own_headers() -> None:
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    out = decode(
        [read(0, b"a", headers={"account_id": 42}, timestamp=stamp), read(1, b"b")],
        STREAM,
        consumed=-1,
        now=99.0,
    )
    assert [(r.position, r.body) for r in out.records] == [(1, b"a"), (2, b"b")]
    assert out.records[0].headers == {"account_id": 42}
    assert out.records[0].timestamp == stamp.timestamp()
    assert out.records[1].timestamp == 99.0  # no timestamp on the message: now
    assert out.records[0].routing_key == "invoice.paid"
    assert out.consumed == 1


def test_offsets_already_read_are_dropped() -> None:
    out = decode([read(5), read(6), read(7)], STREAM, consumed=6, now=0.0)
    assert [r.position for r in out.records] == [8]
    assert out.consumed == 7
    assert out.last is not None and out.last.offset == 7


def test_nothing_new_keeps_the_position() -> None:
    out = decode([read(3)], STREAM, consumed=3, now=0.0)
    assert out.records == [] and out.consumed == 3 and out.last is None


def test_control_messages_are_taken_out_but_count_as_read() -> None:
    marker, beacon = Marker("m"), Beacon("e", 0)
    messages = [
        read(0, exchange="", routing_key=STREAM, headers=beacon.headers()),
        read(1, b"event"),
        read(2, exchange="", routing_key=STREAM, headers=marker.headers()),
    ]
    out = decode(messages, STREAM, consumed=-1, now=0.0)
    assert [r.body for r in out.records] == [b"event"]
    assert out.controls == [(0, beacon), (2, marker)]
    assert out.consumed == 2


def test_control_messages_read_over_the_stream_protocol_are_recognised() -> None:
    beacon = Beacon("e", 4)
    raw = {k.encode(): v.encode() if isinstance(v, str) else v for k, v in beacon.headers().items()}
    message = message_of(amqp10(b"", exchange=b"", routing_key=STREAM.encode(), properties=raw), 9)
    assert control_of(message, STREAM) == beacon


def test_a_forged_control_header_from_the_application_stays_an_event() -> None:
    out = decode([read(0, headers=Marker("m").headers())], STREAM, consumed=-1, now=0.0)
    assert len(out.records) == 1 and out.controls == []
