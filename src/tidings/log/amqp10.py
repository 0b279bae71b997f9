"""A fast reader for the AMQP 1.0 messages RabbitMQ keeps in a stream.

RabbitMQ stores every message of a stream as AMQP 1.0, also what AMQP 0-9-1 publishers
send. rstream's decoder builds the whole message model for each one, most of the cost of
reading the stream (docs/architecture.md); tidings needs five fields. This
module reads exactly those from the encoded bytes: the exchange and routing key (message
annotations), the headers (application properties), the message id and creation time
(properties) and the body (data sections).

It reads the shapes AMQP 0-9-1 publishers produce: sections of the standard descriptors,
primitive values in annotations, properties and application properties. Anything else
(compound header values, ``amqp-value`` bodies, types it does not know) raises
:class:`Unsupported`, and the caller decodes that message with rstream instead, so both
give the same result for every message.
"""

from __future__ import annotations

import struct
from typing import Any

from tidings.log.message import normalised, text_key

__all__ = ["Fields", "Unsupported", "read_message"]


class Unsupported(ValueError):
    """The message has a shape this reader leaves to the full decoder."""


# Section descriptors (smallulong codes) of a message.
_HEADER = 0x70
_DELIVERY_ANNOTATIONS = 0x71
_MESSAGE_ANNOTATIONS = 0x72
_PROPERTIES = 0x73
_APPLICATION_PROPERTIES = 0x74
_DATA = 0x75
_FOOTER = 0x78

# Fixed-width primitives: constructor -> struct format.
_FIXED = {
    0x50: ">B",  # ubyte
    0x51: ">b",  # byte
    0x52: ">B",  # smalluint
    0x53: ">B",  # smallulong
    0x54: ">b",  # smallint
    0x55: ">b",  # smalllong
    0x56: ">?",  # boolean
    0x60: ">H",  # ushort
    0x61: ">h",  # short
    0x70: ">I",  # uint
    0x71: ">i",  # int
    0x72: ">f",  # float
    0x80: ">Q",  # ulong
    0x81: ">q",  # long
    0x82: ">d",  # double
    0x83: ">q",  # timestamp (ms)
}
_FIXED_STRUCTS = {code: struct.Struct(fmt) for code, fmt in _FIXED.items()}
_CONSTANTS: dict[int, Any] = {0x40: None, 0x41: True, 0x42: False, 0x43: 0, 0x44: 0}
_U32 = struct.Struct(">I")

#: What :func:`read_message` returns: exchange, routing key, headers, message id,
#: creation time (ms) and body.
Fields = tuple[str, str, dict[str, Any], Any, int | None, bytes]


def read_message(data: bytes) -> Fields:
    """The fields tidings uses of one encoded message.

    Headers come normalised as :func:`tidings.log.message.normalise_headers` makes them:
    text keys; strings, symbols and binaries as ``str`` where they are UTF-8, else bytes;
    numbers and booleans as such. The message id is as encoded (bytes for a string).

    Raises:
        Unsupported: a shape left to the full decoder (see the module docstring).
    """
    end = len(data)
    pos = 0
    exchange = routing_key = ""
    headers: dict[str, Any] = {}
    message_id: Any = None
    created: int | None = None
    body: list[bytes] = []
    try:
        while pos < end:
            if data[pos] != 0x00 or data[pos + 1] != 0x53:
                raise Unsupported("a section without a small descriptor")
            section = data[pos + 2]
            pos += 3
            if section == _DATA:
                chunk, pos = _value(data, pos)
                if not isinstance(chunk, bytes):
                    raise Unsupported("a data section that is not binary")
                body.append(chunk)
            elif section == _APPLICATION_PROPERTIES:
                headers, pos = _map(data, pos, text=True)
            elif section == _MESSAGE_ANNOTATIONS:
                annotations, pos = _map(data, pos)
                exchange = _text(annotations.get(b"x-exchange", b""))
                routing_key = _text(annotations.get(b"x-routing-key", b""))
            elif section == _PROPERTIES:
                message_id, created, pos = _properties(data, pos)
            elif section in (_HEADER, _DELIVERY_ANNOTATIONS, _FOOTER):
                pos = _skip_compound(data, pos)
            else:
                raise Unsupported(f"section 0x{section:02x}")
    except (IndexError, struct.error) as exc:
        raise Unsupported(f"truncated message: {exc}") from None
    if pos != end:
        raise Unsupported("a value runs past the end")
    if not body:
        raise Unsupported("no data section")
    return (
        exchange,
        routing_key,
        headers,
        message_id,
        created,
        body[0] if len(body) == 1 else b"".join(body),
    )


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _value(data: bytes, pos: int) -> tuple[Any, int]:
    """One primitive value; compound ones and unknown types are Unsupported."""
    code = data[pos]
    # The common constructors first: this runs for every field of every message.
    if code == 0xA1 or code == 0xA3 or code == 0xA0:  # str8, sym8, vbin8
        start = pos + 2
        stop = start + data[pos + 1]
    elif code == 0x40:
        return None, pos + 1
    elif code == 0xB1 or code == 0xB3 or code == 0xB0:  # str32, sym32, vbin32
        start = pos + 5
        stop = start + _U32.unpack_from(data, pos + 1)[0]
    elif code in _CONSTANTS:
        return _CONSTANTS[code], pos + 1
    else:
        fixed = _FIXED_STRUCTS.get(code)
        if fixed is None:
            raise Unsupported(f"constructor 0x{code:02x}")
        return fixed.unpack_from(data, pos + 1)[0], pos + 1 + fixed.size
    if stop > len(data):
        raise IndexError("variable-width value past the end")
    return data[start:stop], stop


def _compound(data: bytes, pos: int) -> tuple[int, int, int]:
    """(element count, first element, end) of a list or map at ``pos``."""
    code = data[pos]
    if code == 0xC0 or code == 0xC1:  # list8, map8
        return data[pos + 2], pos + 3, pos + 2 + data[pos + 1]
    if code == 0x45:  # list0
        return 0, pos + 1, pos + 1
    if code == 0xD0 or code == 0xD1:  # list32, map32
        size, count = _U32.unpack_from(data, pos + 1)[0], _U32.unpack_from(data, pos + 5)[0]
        return count, pos + 9, pos + 5 + size
    raise Unsupported(f"constructor 0x{code:02x} where a list or map was expected")


def _properties(data: bytes, pos: int) -> tuple[Any, int | None, int]:
    """The message id and creation time of the properties list, and where it ends."""
    count, pos, end = _compound(data, pos)
    message_id: Any = None
    created: Any = None
    # Fields: message-id, user-id, to, subject, reply-to, correlation-id, content-type,
    # content-encoding, absolute-expiry-time, creation-time, ... (the rest is not read).
    for index in range(min(count, 10)):
        if data[pos] == 0x40:  # null, as most of these fields are: no call to read it
            pos += 1
            continue
        value, pos = _value(data, pos)
        if index == 0:
            message_id = value
        elif index == 9:
            created = value
    if count <= 10 and pos != end:
        raise Unsupported("list size does not match its elements")
    if end > len(data):
        raise IndexError("properties past the end")
    return message_id, created, end


def _map(data: bytes, pos: int, text: bool = False) -> tuple[dict[Any, Any], int]:
    """A map of primitives; with ``text``, normalised as it is read (one pass, not two),
    as :func:`tidings.log.message.normalise_headers` would."""
    count, pos, end = _compound(data, pos)
    if count % 2:
        raise Unsupported("a map with an odd element count")
    out: dict[Any, Any] = {}
    for _ in range(count // 2):
        key, pos = _value(data, pos)
        value, pos = _value(data, pos)
        if text:
            key, value = text_key(key), normalised(value)
        out[key] = value
    if pos != end:
        raise Unsupported("map size does not match its elements")
    return out, end


def _skip_compound(data: bytes, pos: int) -> int:
    if data[pos] == 0x40:  # a null section value
        return pos + 1
    end = _compound(data, pos)[2]
    if end > len(data):
        raise IndexError("section past the end")
    return end
