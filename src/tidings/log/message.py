"""A message read from the RabbitMQ stream, whichever protocol read it.

The stream is read over AMQP 0-9-1 (aiormq) or over RabbitMQ's stream protocol (rstream);
the two deliver the same stored message in different shapes. Both are turned into one
:class:`StreamMessage`, normalised so that the same message read either way compares equal
(the fingerprint that recognises a stream after a reconnect depends on it), and
:func:`decode` turns a batch of them into records and control messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiormq.abc import DeliveredMessage

from tidings.log.control import CONTROL_HEADER, Control, parse_control
from tidings.record import Record

__all__ = [
    "POSITION_HEADER",
    "Decoded",
    "StreamMessage",
    "control_of",
    "decode",
    "fingerprint",
    "from_delivery",
    "normalise_headers",
    "normalised",
    "text_key",
]

#: The header RabbitMQ puts on every message read from a stream over AMQP 0-9-1: its offset.
POSITION_HEADER = "x-stream-offset"


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """One message of the stream.

    Attributes:
        offset: its offset in the stream (from 0).
        exchange: the exchange it was published to ("" for the default exchange).
        routing_key: the routing key it was published with.
        body: the payload.
        headers: the application's headers; text values as ``str``. Handed on to the
            record as they are: nothing changes them after decoding.
        timestamp: the publisher's timestamp in seconds since the epoch, None if none.
        message_id: the publisher's message id, None if none.
    """

    offset: int
    exchange: str
    routing_key: str
    body: bytes
    headers: Mapping[str, Any] = field(default_factory=dict)
    timestamp: float | None = None
    message_id: str | None = None


def normalise_headers(raw: Mapping[Any, Any]) -> dict[str, Any]:
    """Headers with text keys and values, nested tables and arrays too: the stream
    protocol hands out AMQP 1.0 strings as bytes where AMQP 0-9-1 gives ``str``; bytes
    that are not UTF-8 stay bytes."""
    return {text_key(key): normalised(value) for key, value in raw.items()}


def text_key(key: Any) -> str:
    """A header key as text (AMQP 1.0 gives strings and symbols as bytes)."""
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)


def normalised(value: Any) -> Any:
    """A header value as :func:`normalise_headers` gives it: UTF-8 bytes as ``str``,
    tables and arrays normalised inside."""
    if isinstance(value, bytes):
        # Not contextlib.suppress: this runs for every header of every event, and entering
        # a context manager costs more than the decode.
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass  # binary: stays bytes
    elif isinstance(value, Mapping):
        return normalise_headers(value)
    elif isinstance(value, list):
        return [normalised(item) for item in value]
    return value


def from_delivery(message: DeliveredMessage) -> StreamMessage | None:
    """The stream message of an AMQP 0-9-1 delivery; None if it carries no offset (it was
    not read from a stream)."""
    properties = message.header.properties
    raw = properties.headers or {}
    offset = raw.get(POSITION_HEADER)
    if not isinstance(offset, int):
        return None
    headers = normalise_headers(raw)
    del headers[POSITION_HEADER]
    stamp = properties.timestamp
    message_id = properties.message_id
    return StreamMessage(
        offset,
        getattr(message.delivery, "exchange", "") or "",
        message.routing_key or "",
        message.body,
        headers,
        stamp.timestamp() if stamp is not None else None,
        message_id.decode("utf-8", "replace") if isinstance(message_id, bytes) else message_id,
    )


@dataclass(slots=True)
class Decoded:
    """What a batch of stream messages holds.

    Attributes:
        records: the events, positions = offsets + 1, in order.
        controls: the control messages (offset, message), in order.
        consumed: the last offset read (the input's if nothing new came).
        last: the message at ``consumed`` when it is in this batch.
    """

    records: list[Record] = field(default_factory=list)
    controls: list[tuple[int, Control]] = field(default_factory=list)
    consumed: int = -1
    last: StreamMessage | None = None


def decode(messages: Sequence[StreamMessage], stream: str, consumed: int, now: float) -> Decoded:
    """Turns messages read from ``stream`` into records and control messages.

    Args:
        messages: as read, in offset order.
        stream: the stream's name (control messages are published to it directly).
        consumed: the last offset already read; messages at or below it are dropped (the
            head of a resumed consumer's first chunk).
        now: the timestamp of records whose message carries none.
    """
    out = Decoded(consumed=consumed)
    records = out.records
    for message in messages:
        offset = message.offset
        if offset <= consumed:
            continue
        consumed = offset
        out.last = message
        headers = message.headers
        if CONTROL_HEADER in headers:
            control = control_of(message, stream)
            if control is not None:
                out.controls.append((offset, control))
                continue
        stamp = message.timestamp
        records.append(
            Record(
                offset + 1,
                message.routing_key,
                message.body,
                stamp if stamp is not None else now,
                headers,
            )
        )
    out.consumed = consumed
    return out


def fingerprint(message: StreamMessage) -> int:
    """Tells two stream messages apart (within one process): a stream recreated under the
    same name holds another message at an offset this node has read."""
    # Header values are left out: the two protocols may give a value of an unusual type
    # (a table, a timestamp) in different shapes, and the same message must match itself.
    return hash(
        (
            message.exchange,
            message.routing_key,
            message.body,
            tuple(sorted(message.headers)),
            message.timestamp,
            message.message_id,
        )
    )


def control_of(message: StreamMessage, stream: str) -> Control | None:
    """The control message ``message`` carries, or None for an event."""
    return parse_control(message.exchange, message.routing_key, stream, message.headers)
