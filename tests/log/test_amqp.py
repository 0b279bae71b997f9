"""The pure parts of the AMQP plumbing: decoding delivered stream messages, routing checks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiormq.abc import DeliveredMessage
from pamqp import commands as spec
from pamqp.header import ContentHeader

from tidings.config import AmqpSettings
from tidings.log.amqp import decode, reaches_stream, stream_arguments
from tidings.log.epoch import Beacon, Marker

STREAM = "tidings.log"


def delivered(
    offset: int,
    body: bytes = b"{}",
    *,
    exchange: str = "app",
    routing_key: str = "invoice.paid",
    headers: dict[str, Any] | None = None,
    timestamp: datetime | None = None,
) -> DeliveredMessage:
    properties = spec.Basic.Properties(
        headers={**(headers or {}), "x-stream-offset": offset}, timestamp=timestamp
    )
    return DeliveredMessage(
        delivery=spec.Basic.Deliver(
            consumer_tag="c", delivery_tag=offset + 1, exchange=exchange, routing_key=routing_key
        ),
        header=ContentHeader(body_size=len(body), properties=properties),
        body=body,
        channel=None,  # type: ignore[arg-type]  # decode never touches the channel
    )


def test_records_get_offset_plus_one_and_keep_their_own_headers() -> None:
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    out = decode(
        [delivered(0, b"a", headers={"account_id": 42}, timestamp=stamp), delivered(1, b"b")],
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
    out = decode([delivered(5), delivered(6), delivered(7)], STREAM, consumed=6, now=0.0)
    assert [r.position for r in out.records] == [8]
    assert out.consumed == 7


def test_nothing_new_keeps_the_position() -> None:
    out = decode([delivered(3)], STREAM, consumed=3, now=0.0)
    assert out.records == [] and out.consumed == 3


def test_control_messages_are_taken_out_but_count_as_read() -> None:
    marker, beacon = Marker("m"), Beacon("e", 0)
    messages = [
        delivered(0, exchange="", routing_key=STREAM, headers=beacon.headers()),
        delivered(1, b"event"),
        delivered(2, exchange="", routing_key=STREAM, headers=marker.headers()),
    ]
    out = decode(messages, STREAM, consumed=-1, now=0.0)
    assert [r.body for r in out.records] == [b"event"]
    assert out.controls == [(0, beacon), (2, marker)]
    assert out.consumed == 2


def test_a_forged_control_header_from_the_application_stays_an_event() -> None:
    out = decode([delivered(0, headers=Marker("m").headers())], STREAM, consumed=-1, now=0.0)
    assert len(out.records) == 1 and out.controls == []


def test_bindings_decide_which_routing_keys_reach_the_stream() -> None:
    topic = AmqpSettings(url="amqp://x", bindings=["invoice.*", "audit.#"])
    assert reaches_stream(topic, "invoice.paid")
    assert reaches_stream(topic, "audit.a.b")
    assert not reaches_stream(topic, "order.created")
    direct = AmqpSettings(url="amqp://x", exchange_type="direct", bindings=["a"])
    assert reaches_stream(direct, "a") and not reaches_stream(direct, "b")
    fanout = AmqpSettings(url="amqp://x", exchange_type="fanout", bindings=["ignored"])
    assert reaches_stream(fanout, "anything")


def test_stream_arguments_round_the_age_up_to_whole_seconds() -> None:
    args = stream_arguments(AmqpSettings(url="amqp://x", stream_max_age=1.5, stream_max_bytes=10))
    assert args == {"x-queue-type": "stream", "x-max-age": "2s", "x-max-length-bytes": 10}
