"""The fast AMQP 1.0 reader gives what rstream's full decoder gives, or leaves it to it."""

from __future__ import annotations

from typing import Any

import pytest
import rstream
from hypothesis import given, settings
from hypothesis import strategies as st
from rstream import Properties

from tidings.log.amqp10 import Unsupported, read_message
from tidings.log.stream_protocol import message_from_bytes, message_of


def encoded(
    body: bytes = b'{"a":1}',
    *,
    headers: dict[Any, Any] | None = None,
    annotations: dict[Any, Any] | None = None,
    message_id: Any = b"m-1",
    creation_time: int | None = 1_795_842_520_000,
    with_header: bool = True,
) -> bytes:
    """A message as RabbitMQ stores what an AMQP 0-9-1 publisher sent."""
    message = rstream.AMQPMessage(
        body=body,
        header=rstream.Header(durable=True, priority=0) if with_header else None,
        application_properties=headers,
        properties=Properties(
            message_id=message_id, content_type=b"application/json", creation_time=creation_time
        ),
        message_annotations=annotations
        if annotations is not None
        else {b"x-exchange": b"app", b"x-routing-key": b"invoice.paid"},
    )
    return bytes(message)


def both_ways(data: bytes) -> None:
    fast = message_from_bytes(data, 42)
    full = message_of(rstream.amqp_decoder(data), 42)
    assert fast == full


def test_the_fields_of_a_usual_message() -> None:
    data = encoded(headers={b"x-tidings-channel": b"user#1", b"n": 5})
    exchange, routing_key, headers, message_id, created, body = read_message(data)
    assert (exchange, routing_key, body) == ("app", "invoice.paid", b'{"a":1}')
    assert headers == {"x-tidings-channel": "user#1", "n": 5}
    assert (message_id, created) == (b"m-1", 1_795_842_520_000)
    both_ways(data)


def test_a_message_without_optional_sections() -> None:
    both_ways(encoded(annotations={}, message_id=None, creation_time=None, with_header=False))


def test_several_data_sections_are_one_body() -> None:
    data = encoded(b"ab") + b"\x00\x53\x75\xa0\x02cd"  # a second data section
    assert read_message(data)[5] == b"abcd"
    # (rstream 1.1 keeps only the last data section: not compared.)
    assert message_from_bytes(data, 0).body == b"abcd"


header_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=300).map(str.encode),
    st.binary(max_size=300),
)


@settings(max_examples=300, deadline=None)
@given(
    headers=st.dictionaries(st.text(min_size=1, max_size=20).map(str.encode), header_values),
    body=st.binary(max_size=2000),
    message_id=st.one_of(st.none(), st.text(max_size=40).map(str.encode)),
    creation_time=st.one_of(st.none(), st.integers(min_value=0, max_value=2**62)),
)
def test_the_fast_reader_agrees_with_rstream(
    headers: dict[bytes, Any], body: bytes, message_id: bytes | None, creation_time: int | None
) -> None:
    both_ways(encoded(body, headers=headers, message_id=message_id, creation_time=creation_time))


def test_compound_header_values_are_left_to_rstream() -> None:
    data = encoded(headers={b"nested": {b"a": 1}, b"list": [1, 2]})
    with pytest.raises(Unsupported):
        read_message(data)
    both_ways(data)


def test_an_amqp_value_body_is_left_to_rstream() -> None:
    data = bytes(rstream.AMQPMessage(value=b"v", properties=Properties(message_id=b"x")))
    with pytest.raises(Unsupported):
        read_message(data)


@pytest.mark.parametrize("cut", [1, 2, 5, 20, -3, -1])
def test_truncated_bytes_are_unsupported_not_a_crash(cut: int) -> None:
    data = encoded(headers={b"k": b"v" * 40})
    with pytest.raises(Unsupported):
        read_message(data[:cut])
