"""The event-stream wire format: exact bytes, read back as a browser reads them (no sockets)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.protocol.eventstream import chunk, comment, event, event_id, parse_event_id
from tidings.protocol.messages import RecoverPosition


@dataclass(frozen=True)
class Dispatched:
    """An event as an ``EventSource`` hands it to the page."""

    type: str
    data: str
    last_event_id: str


def browser_reads(stream: bytes) -> tuple[list[Dispatched], str]:
    """The events a browser dispatches from ``stream`` and its last event id after it.

    HTML §9.2.6 ("Interpreting an event stream"), for the fields tidings writes (``retry``
    is ignored): lines end at CRLF, LF or CR; a line starting with ``:`` is a comment; one
    space after the colon is dropped; a blank line dispatches what was gathered.
    """
    events: list[Dispatched] = []
    data: list[str] = []
    kind = ""
    last_id = ""
    text = stream.decode()
    lines = re.split(r"\r\n|\r|\n", text)
    # Only lines that were terminated count: what follows the last line break is pending.
    for line in lines[:-1]:
        if line == "":
            if data:
                events.append(Dispatched(kind or "message", "\n".join(data), last_id))
            data, kind = [], ""
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            kind = value
        elif name == "id" and "\x00" not in value:
            last_id = value
    return events, last_id


# ---------------------------------------------------------------------- events
def test_an_event_with_an_id_and_a_name_has_exact_bytes() -> None:
    assert event(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert event(b"{}", id=b"e:7") == b"id: e:7\ndata: {}\n\n"
    assert event(b"x", id=b"e:7", name=b"gap") == b"id: e:7\nevent: gap\ndata: x\n\n"
    assert event(b"x", name=b"gap") == b"event: gap\ndata: x\n\n"


def test_an_event_is_dispatched_with_its_data_type_and_id() -> None:
    stream = event(b'{"n":1}', id=b"ep:1") + event(b"g", id=b"ep:2", name=b"gap")
    events, last_id = browser_reads(stream)
    assert events == [Dispatched("message", '{"n":1}', "ep:1"), Dispatched("gap", "g", "ep:2")]
    assert last_id == "ep:2"


def test_an_event_without_an_id_keeps_the_previous_one() -> None:
    events, last_id = browser_reads(event(b"1", id=b"e:5") + event(b"2"))
    assert [e.last_event_id for e in events] == ["e:5", "e:5"]
    assert last_id == "e:5"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"a\nb", b"data: a\ndata: b\n\n"),
        (b"a\r\nb", b"data: a\ndata: b\n\n"),
        (b"a\rb", b"data: a\ndata: b\n\n"),
        (b"a\n", b"data: a\ndata: \n\n"),
        (b"\n", b"data: \ndata: \n\n"),
        (b"a\r\rb", b"data: a\ndata: \ndata: b\n\n"),
    ],
)
def test_data_of_several_lines_is_one_field_per_line(data: bytes, expected: bytes) -> None:
    assert event(data) == expected


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1))
def test_any_data_reads_back_with_its_line_breaks_as_lf(text: str) -> None:
    out = event(text.encode())
    expected = re.sub(r"\r\n|\r", "\n", text)
    assert browser_reads(out) == ([Dispatched("message", expected, "")], "")


def test_data_starting_with_a_space_keeps_it() -> None:
    events, _ = browser_reads(event(b" x"))
    assert events[0].data == " x"


def test_empty_data_is_an_event_with_empty_data() -> None:
    out = event(b"", id=b"e:3")
    assert out == b"id: e:3\ndata: \n\n"
    assert browser_reads(out) == ([Dispatched("message", "", "e:3")], "e:3")


@pytest.mark.parametrize("bad", [b"a\nb", b"a\rb", b"\r\n"])
def test_an_id_or_name_with_a_line_break_is_refused(bad: bytes) -> None:
    with pytest.raises(ValueError, match="line break"):
        event(b"x", id=bad)
    with pytest.raises(ValueError, match="line break"):
        event(b"x", name=bad)


def test_an_id_with_a_nul_is_refused() -> None:
    # A browser would ignore it, and the client would resume from an older position.
    with pytest.raises(ValueError, match="NUL"):
        event(b"x", id=b"e\x00:1")


# ---------------------------------------------------------------------- comments
def test_a_comment_is_a_keep_alive_that_dispatches_nothing() -> None:
    assert comment(b"ping") == b": ping\n\n"
    assert browser_reads(comment(b"ping") + comment(b"")) == ([], "")


def test_a_comment_between_events_changes_nothing() -> None:
    stream = event(b"1", id=b"e:1") + comment(b"ping") + event(b"2")
    events, last_id = browser_reads(stream)
    assert [e.data for e in events] == ["1", "2"]
    assert last_id == "e:1"


@pytest.mark.parametrize("bad", [b"a\nb", b"a\rdata: x"])
def test_a_comment_with_a_line_break_is_refused(bad: bytes) -> None:
    with pytest.raises(ValueError, match="line break"):
        comment(bad)


# ---------------------------------------------------------------------- ids
@pytest.mark.parametrize(
    ("epoch", "offset", "expected"),
    [
        ("ep1", 7, b"ep1:7"),
        ("", 0, b":0"),
        ("a:b c/\n", 12, b"a%3Ab%20c%2F%0A:12"),
        ("caf\u00e9", 3, b"caf%C3%A9:3"),
        ("%", 1, b"%25:1"),
        ("\x00", 2, b"%00:2"),
    ],
)
def test_event_id_bytes(epoch: str, offset: int, expected: bytes) -> None:
    assert event_id(epoch, offset) == expected


@given(
    epoch=st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1),
    offset=st.integers(min_value=0, max_value=10**18 - 1),
)
def test_every_position_survives_the_browser_round_trip(epoch: str, offset: int) -> None:
    # Written in an event, kept by the browser as its last id, sent back as Last-Event-ID.
    _, last_id = browser_reads(event(b"{}", id=event_id(epoch, offset)))
    assert last_id.isascii()
    assert parse_event_id(last_id) == RecoverPosition(offset, epoch)


def test_a_bare_offset_means_this_epoch() -> None:
    assert parse_event_id("42") == RecoverPosition(42, "")
    assert parse_event_id(":42") == RecoverPosition(42, "")


def test_whitespace_around_an_id_is_ignored() -> None:
    assert parse_event_id("  ep:9 \t") == RecoverPosition(9, "ep")


def test_the_offset_is_after_the_last_colon() -> None:
    assert parse_event_id("a:b:5") == RecoverPosition(5, "a:b")


@pytest.mark.parametrize(
    "text",
    ["", " ", "abc", "e:", "e:-1", "e:+1", "e:1.5", "e:1e3", "e: 1", "e:0x1", "e:\u0661",
     "e:99999999999999999999", "e:5:"],
)
def test_an_unreadable_id_never_recovers(text: str) -> None:
    position = parse_event_id(text)
    assert position == parse_event_id("not an id")
    assert position.epoch  # never "any epoch": recovery is refused and a gap event follows
    assert event_id(position.epoch, 0) == b"%00:0"  # an epoch no log names itself


# ---------------------------------------------------------------------- chunks
@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"abc", b"3\r\nabc\r\n"),
        (b"x" * 26, b"1a\r\n" + b"x" * 26 + b"\r\n"),
        (b"\r\n", b"2\r\n\r\n\r\n"),
        (b"x" * 4096, b"1000\r\n" + b"x" * 4096 + b"\r\n"),
    ],
)
def test_chunk_bytes(payload: bytes, expected: bytes) -> None:
    assert chunk(payload) == expected


def test_an_empty_payload_is_no_chunk_rather_than_the_last_one() -> None:
    assert chunk(b"") == b""


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=20))
def test_chunks_decode_back_to_the_body(payloads: list[bytes]) -> None:
    wire = b"".join(chunk(p) for p in payloads) + b"0\r\n\r\n"
    body, pos = b"", 0
    while True:
        end = wire.index(b"\r\n", pos)
        size = int(wire[pos:end], 16)
        if size == 0:
            assert wire[end:] == b"\r\n\r\n"
            break
        body += wire[end + 2 : end + 2 + size]
        assert wire[end + 2 + size : end + 4 + size] == b"\r\n"
        pos = end + 4 + size
    assert body == b"".join(payloads)
