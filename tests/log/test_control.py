"""Control messages: the headers that carry beacons and markers, and telling them from
events (pure, no broker)."""

from __future__ import annotations

from tidings.log.control import CONTROL_HEADER, Beacon, Marker, UnknownControl, parse_control

STREAM = "tidings.log"


def test_beacon_and_marker_round_trip_through_headers() -> None:
    beacon = Beacon("abc123", 41)
    marker = Marker.new()
    assert parse_control("", STREAM, STREAM, beacon.headers()) == beacon
    assert parse_control("", STREAM, STREAM, marker.headers()) == marker


def test_only_messages_published_to_the_stream_itself_are_control() -> None:
    headers = Beacon("abc123", 1).headers()
    assert parse_control("app", STREAM, STREAM, headers) is None
    assert parse_control("", "other.queue", STREAM, headers) is None
    assert parse_control("", STREAM, STREAM, {"account_id": 42}) is None


def test_unknown_or_malformed_control_is_skipped_not_delivered() -> None:
    assert parse_control("", STREAM, STREAM, {CONTROL_HEADER: "future"}) == UnknownControl("future")
    broken = {CONTROL_HEADER: "beacon", "x-tidings-epoch": "e", "x-tidings-seen": "1"}
    assert isinstance(parse_control("", STREAM, STREAM, broken), UnknownControl)
    assert isinstance(
        parse_control("", STREAM, STREAM, {CONTROL_HEADER: b"marker"}), UnknownControl
    )


def test_header_values_decoded_as_bytes_are_accepted() -> None:
    headers = {CONTROL_HEADER: b"beacon", "x-tidings-epoch": b"e1", "x-tidings-seen": 3}
    assert parse_control("", STREAM, STREAM, headers) == Beacon("e1", 3)


def test_a_beacon_is_stale_unless_written_after_what_its_writer_had_read() -> None:
    assert not Beacon("e", -1).is_stale(0)
    assert not Beacon("e", 9).is_stale(10)
    assert Beacon("e", 10).is_stale(10)
    assert Beacon("e", 5000).is_stale(3)
