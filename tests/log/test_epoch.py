"""The pure rules of epoch beacons and markers (no broker)."""

from __future__ import annotations

from tidings.log.epoch import (
    CONTROL_HEADER,
    Beacon,
    BeaconScan,
    Marker,
    ScanResult,
    UnknownControl,
    new_epoch,
    parse_control,
)

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


def test_scan_takes_the_first_usable_beacon() -> None:
    scan = BeaconScan("m1")
    assert scan.feed(0, None) is None
    assert scan.feed(1, Beacon("old", 900)) is None  # stale: from a longer, earlier stream
    assert scan.feed(2, Marker("someone-else")) is None
    assert scan.feed(3, Beacon("e1", 2)) == ScanResult(Beacon("e1", 2), 3)
    assert scan.skipped == 1


def test_scan_stops_at_its_marker_when_no_beacon_came() -> None:
    scan = BeaconScan("m1")
    assert scan.feed(7, None) is None
    assert scan.feed(8, Marker("m1")) == ScanResult(None, 8)


def test_scan_skips_a_distrusted_epoch() -> None:
    scan = BeaconScan("m1", distrust="gone")
    assert scan.feed(0, Beacon("gone", -1)) is None
    assert scan.feed(1, Beacon("fresh", 0)) == ScanResult(Beacon("fresh", 0), 1)


def test_new_epochs_differ() -> None:
    assert len({new_epoch() for _ in range(100)}) == 100
    assert len(new_epoch()) == 12
