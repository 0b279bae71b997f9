"""The WebSocket frame reader: bytes in, events out, every rule of RFC 6455 §5."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.codes import CloseCode
from tidings.protocol.wsframes import (
    Close,
    Event,
    Failure,
    FrameReader,
    Message,
    Opcode,
    Ping,
    Pong,
    close_frame,
    encode_frame,
    unmask,
)

LIMIT = 1024


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    mask: bytes = b"\x37\xfa\x21\x3d",
    length: int | None = None,
) -> bytes:
    """A client frame; ``length`` forces the 7-bit length field (126/127 for the long forms)."""
    n = len(payload)
    field = length if length is not None else n if n < 126 else 126 if n < 1 << 16 else 127
    header = bytes(((0x80 if fin else 0) | rsv | opcode, (0x80 if masked else 0) | field))
    if field == 126:
        header += n.to_bytes(2, "big")
    elif field == 127:
        header += n.to_bytes(8, "big")
    if not masked:
        return header + payload
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def text(payload: bytes, **kwargs: object) -> bytes:
    return frame(Opcode.TEXT, payload, **kwargs)  # type: ignore[arg-type]


def read(data: bytes, limit: int = LIMIT) -> list[Event]:
    return FrameReader(limit).feed(data)


class fails:  # lower case: it reads as a function in the assertions
    """Equal to any :class:`Failure` with ``code`` (the reason is for people, not asserted)."""

    def __init__(self, code: CloseCode) -> None:
        self.code = code

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Failure) and other.code == self.code

    def __repr__(self) -> str:
        return f"Failure({self.code!r}, ...)"


# ---------------------------------------------------------------------- data messages
def test_a_masked_text_frame_is_a_text_message() -> None:
    assert read(text(b'{"id":1}')) == [Message(b'{"id":1}', True)]


def test_a_binary_frame_is_a_binary_message() -> None:
    assert read(frame(Opcode.BINARY, b"\xff\x00")) == [Message(b"\xff\x00", False)]


def test_an_empty_message() -> None:
    assert read(text(b"")) == [Message(b"", True)]


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_every_length_form(n: int) -> None:
    payload = os.urandom(n)
    assert read(frame(Opcode.BINARY, payload), limit=1 << 20) == [Message(payload, False)]


def test_several_frames_in_one_chunk_come_out_in_order() -> None:
    data = text(b"a") + frame(Opcode.PING, b"p") + text(b"b") + frame(Opcode.PONG, b"q")
    assert read(data) == [Message(b"a", True), Ping(b"p"), Message(b"b", True), Pong(b"q")]


def test_a_fragmented_message_is_reassembled() -> None:
    data = (
        text(b"he", fin=False)
        + frame(Opcode.CONTINUATION, b"ll", fin=False)
        + frame(Opcode.CONTINUATION, b"o")
    )
    assert read(data) == [Message(b"hello", True)]


def test_control_frames_may_come_between_fragments() -> None:
    data = (
        frame(Opcode.BINARY, b"ab", fin=False)
        + frame(Opcode.PING, b"1")
        + frame(Opcode.PONG)
        + frame(Opcode.CONTINUATION, b"cd")
    )
    assert read(data) == [Ping(b"1"), Pong(b""), Message(b"abcd", False)]


def test_a_multibyte_character_split_across_fragments_is_valid() -> None:
    snowman = "☃".encode()
    data = text(snowman[:1], fin=False) + frame(Opcode.CONTINUATION, snowman[1:])
    assert read(data) == [Message(snowman, True)]


def test_messages_after_a_fragmented_one_start_afresh() -> None:
    reader = FrameReader(LIMIT)
    assert reader.feed(text(b"x" * 600, fin=False)) == []
    assert reader.feed(frame(Opcode.CONTINUATION, b"y" * 400)) == [
        Message(b"x" * 600 + b"y" * 400, True)
    ]
    # The size of the last message does not count against the next one.
    assert reader.feed(text(b"z" * 1000)) == [Message(b"z" * 1000, True)]


# ---------------------------------------------------------------------- control frames
def test_ping_and_pong_carry_their_payload() -> None:
    assert read(frame(Opcode.PING, b"hi")) == [Ping(b"hi")]
    assert read(frame(Opcode.PONG, b"ho")) == [Pong(b"ho")]
    assert read(frame(Opcode.PING, b"x" * 125)) == [Ping(b"x" * 125)]


def test_close_with_a_code_and_reason_ends_the_stream() -> None:
    reader = FrameReader(LIMIT)
    data = frame(Opcode.CLOSE, (1000).to_bytes(2, "big") + b"bye") + text(b"ignored")
    assert reader.feed(data) == [Close(1000, "bye")]
    assert reader.done
    assert reader.feed(text(b"later")) == []


def test_close_without_a_payload() -> None:
    assert read(frame(Opcode.CLOSE)) == [Close(None, "")]


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1011, 1012, 1014, 3000, 4999])
def test_valid_close_codes(code: int) -> None:
    assert read(frame(Opcode.CLOSE, code.to_bytes(2, "big"))) == [Close(code, "")]


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_invalid_close_codes_are_a_protocol_error(code: int) -> None:
    assert read(frame(Opcode.CLOSE, code.to_bytes(2, "big"))) == [
        fails(CloseCode.PROTOCOL_ERROR)
    ]


def test_a_one_byte_close_payload_is_a_protocol_error() -> None:
    assert read(frame(Opcode.CLOSE, b"\x03")) == [fails(CloseCode.PROTOCOL_ERROR)]


def test_a_close_reason_that_is_not_utf8_is_invalid_data() -> None:
    data = frame(Opcode.CLOSE, (1000).to_bytes(2, "big") + b"\xff")
    assert read(data) == [fails(CloseCode.INVALID_DATA)]


# ---------------------------------------------------------------------- violations
def test_an_unmasked_frame_is_a_protocol_error() -> None:
    assert read(text(b"hi", masked=False)) == [fails(CloseCode.PROTOCOL_ERROR)]


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10, 0x70])
def test_reserved_bits_are_a_protocol_error(rsv: int) -> None:
    assert read(text(b"hi", rsv=rsv)) == [fails(CloseCode.PROTOCOL_ERROR)]


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes_are_a_protocol_error(opcode: int) -> None:
    assert read(frame(opcode, b"x")) == [fails(CloseCode.PROTOCOL_ERROR)]


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_a_fragmented_control_frame_is_a_protocol_error(opcode: Opcode) -> None:
    assert read(frame(opcode, b"", fin=False)) == [fails(CloseCode.PROTOCOL_ERROR)]


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_a_control_frame_over_125_bytes_is_a_protocol_error(opcode: Opcode) -> None:
    # Refused from the first two bytes, before the payload arrives.
    assert read(frame(opcode, b"x" * 126)[:2]) == [fails(CloseCode.PROTOCOL_ERROR)]


def test_a_continuation_without_a_message_is_a_protocol_error() -> None:
    assert read(frame(Opcode.CONTINUATION, b"x")) == [fails(CloseCode.PROTOCOL_ERROR)]


def test_a_new_message_inside_a_fragmented_one_is_a_protocol_error() -> None:
    data = text(b"a", fin=False) + text(b"b")
    assert read(data) == [fails(CloseCode.PROTOCOL_ERROR)]


def test_a_64_bit_length_with_the_top_bit_set_is_a_protocol_error() -> None:
    data = bytes((0x82, 0xFF)) + (1 << 63).to_bytes(8, "big") + b"mask"
    assert read(data, limit=1 << 62) == [fails(CloseCode.PROTOCOL_ERROR)]


def test_text_that_is_not_utf8_is_invalid_data() -> None:
    assert read(text(b"\xc3\x28")) == [fails(CloseCode.INVALID_DATA)]
    assert read(text("\ud800".encode("utf-8", "surrogatepass"))) == [
        fails(CloseCode.INVALID_DATA)
    ]


def test_binary_need_not_be_utf8() -> None:
    assert read(frame(Opcode.BINARY, b"\xc3\x28")) == [Message(b"\xc3\x28", False)]


def test_a_message_at_the_limit_is_accepted() -> None:
    assert read(text(b"x" * LIMIT)) == [Message(b"x" * LIMIT, True)]


def test_a_frame_over_the_limit_fails_with_1009_from_its_header() -> None:
    header_only = text(b"x" * (LIMIT + 1))[:8]  # 2 + 2 length bytes + mask
    assert read(header_only) == [fails(CloseCode.MESSAGE_TOO_BIG)]


def test_fragments_over_the_limit_together_fail_with_1009() -> None:
    data = text(b"x" * 600, fin=False) + frame(Opcode.CONTINUATION, b"y" * 425)
    assert read(data) == [fails(CloseCode.MESSAGE_TOO_BIG)]


def test_control_frames_do_not_count_against_the_limit() -> None:
    reader = FrameReader(4)
    assert reader.feed(frame(Opcode.PING, b"x" * 100)) == [Ping(b"x" * 100)]


def test_events_before_a_failure_are_kept_and_nothing_after() -> None:
    reader = FrameReader(LIMIT)
    data = frame(Opcode.PING, b"1") + text(b"ok") + text(b"bad", masked=False) + text(b"never")
    assert reader.feed(data) == [Ping(b"1"), Message(b"ok", True), fails(CloseCode.PROTOCOL_ERROR)]
    assert reader.done
    assert reader.feed(text(b"more")) == []


# ---------------------------------------------------------------------- chunking
STREAM = (
    text(b'{"id":1,"connect":{}}')
    + frame(Opcode.PING, b"ping")
    + frame(Opcode.BINARY, bytes(range(256)) * 3)
    + text(b"frag", fin=False)
    + frame(Opcode.PONG)
    + frame(Opcode.CONTINUATION, b"mented", fin=False)
    + frame(Opcode.CONTINUATION, "☃".encode())
    + frame(Opcode.CLOSE, (1001).to_bytes(2, "big") + b"going")
)
EXPECTED: list[Event] = [
    Message(b'{"id":1,"connect":{}}', True),
    Ping(b"ping"),
    Message(bytes(range(256)) * 3, False),
    Pong(b""),
    Message("fragmented☃".encode(), True),
    Close(1001, "going"),
]


def test_the_stream_read_at_once() -> None:
    assert read(STREAM) == EXPECTED


def test_the_stream_fed_one_byte_at_a_time() -> None:
    reader = FrameReader(LIMIT)
    events: list[Event] = []
    for i in range(len(STREAM)):
        events += reader.feed(STREAM[i : i + 1])
    assert events == EXPECTED


def test_the_stream_split_at_every_byte() -> None:
    for cut in range(len(STREAM) + 1):
        reader = FrameReader(LIMIT)
        assert reader.feed(STREAM[:cut]) + reader.feed(STREAM[cut:]) == EXPECTED, cut


@pytest.mark.parametrize(
    "bad",
    [
        text(b"x", masked=False),
        text(b"x" * (LIMIT + 1)),
        text(b"\xff"),
        frame(Opcode.CLOSE, b"\x00"),
    ],
)
def test_a_failure_split_at_every_byte_is_the_same_failure(bad: bytes) -> None:
    data = text(b"before") + bad
    whole = read(data)
    assert isinstance(whole[-1], Failure)
    for cut in range(len(data) + 1):
        reader = FrameReader(LIMIT)
        assert reader.feed(data[:cut]) + reader.feed(data[cut:]) == whole, cut


# ---------------------------------------------------------------------- round trips
messages = st.lists(
    st.tuples(
        st.booleans(),  # text?
        st.text(max_size=300).map(str.encode) | st.binary(max_size=300),
        st.integers(min_value=1, max_value=4),  # fragments
        st.binary(max_size=20),  # a ping between fragments
        st.binary(min_size=4, max_size=4),  # mask
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(messages=messages, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=6))
def test_round_trip_through_any_chunking(
    messages: list[tuple[bool, bytes, int, bytes, bytes]], cuts: list[int]
) -> None:
    stream = b""
    expected: list[Event] = []
    for is_text, payload, parts, ping, mask in messages:
        if is_text:
            try:
                payload.decode()
            except UnicodeDecodeError:
                is_text = False
        size = -(-len(payload) // parts) if payload else 0
        pieces = [payload[i : i + size] for i in range(0, len(payload), size)] if size else [b""]
        opcode = Opcode.TEXT if is_text else Opcode.BINARY
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            stream += frame(opcode if i == 0 else Opcode.CONTINUATION, piece, fin=last, mask=mask)
            if not last and i == 0:
                stream += frame(Opcode.PING, ping, mask=mask)
                expected.append(Ping(ping))
        expected.append(Message(payload, is_text))
    reader = FrameReader(LIMIT)
    events: list[Event] = []
    start = 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts):
        events += reader.feed(stream[start:cut])
        start = cut
    events += reader.feed(stream[start:])
    assert events == expected


@given(data=st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    reader = FrameReader(64)
    events = reader.feed(data)
    assert all(not isinstance(e, Failure) for e in events[:-1])


@given(payload=st.binary(max_size=500), mask=st.binary(min_size=4, max_size=4))
def test_unmask_is_the_rfc_xor(payload: bytes, mask: bytes) -> None:
    masked = unmask(payload, mask)
    assert masked == bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert unmask(masked, mask) == payload


# ---------------------------------------------------------------------- server frames
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.PONG])
@pytest.mark.parametrize(
    ("n", "header"),
    [(0, 2), (1, 2), (125, 2), (126, 4), (127, 4), (65535, 4), (65536, 10), (70000, 10)],
)
def test_server_frames_are_final_unmasked_and_minimal(opcode: Opcode, n: int, header: int) -> None:
    payload = bytes(i % 251 for i in range(n))
    out = encode_frame(opcode, payload)
    assert out[0] == 0x80 | opcode  # FIN, no reserved bit
    assert not out[1] & 0x80  # never masked: one frame serves every socket
    field = out[1] & 0x7F
    length = {126: int.from_bytes(out[2:4], "big"), 127: int.from_bytes(out[2:10], "big")}
    assert length.get(field, field) == n
    assert len(out) == header + n
    assert out[header:] == payload


def test_close_frames() -> None:
    assert close_frame(None) == b"\x88\x00"
    assert close_frame(3001, "shutdown") == b"\x88\x0a\x0b\xb9shutdown"
    long = close_frame(1009, "é" * 100)  # 200 bytes of UTF-8: cut on a character boundary
    assert len(long) <= 2 + 125
    assert long[4:].decode() == "é" * 61
