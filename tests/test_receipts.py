"""Read receipts' pure core: positions, their encoding and merge, marks, the permission
rule and the unread count; no sockets, no ledger."""

from __future__ import annotations

import itertools
import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.receipts import (
    MAX_MARK,
    MAX_SEEN,
    Mark,
    ReadPosition,
    ReceiptError,
    count_unread,
    decode,
    encode,
    entry_key,
    may_mark,
    merge,
    normalize,
    parse_mark,
    parse_query,
    split_key,
)


def written(floor: int = 0, *offsets: int) -> bytes:
    return encode(normalize(floor, offsets))


def apply(writes: list[bytes]) -> bytes | None:
    held: bytes | None = None
    for value in writes:
        held = merge(held, value)
    return held


# ---------------------------------------------------------------------- positions
def test_normalize_drops_what_the_floor_covers_and_closes_gaps_at_the_floor() -> None:
    assert normalize(5, [3, 5, 9, 7]) == ReadPosition(5, (7, 9))
    assert normalize(0, [1, 2, 3, 7]) == ReadPosition(3, (7,))
    assert normalize(3, [4, 4, 6]) == ReadPosition(4, (6,))


def test_a_position_keeps_at_most_max_seen_offsets_raising_the_floor() -> None:
    offsets = range(10, 10 + 3 * (MAX_SEEN + 5), 3)  # never contiguous
    position = normalize(0, offsets)
    assert len(position.seen) == MAX_SEEN
    assert position.seen == tuple(offsets)[-MAX_SEEN:]
    assert position.floor == tuple(offsets)[-MAX_SEEN - 1]
    assert position.has_seen(10)  # below the raised floor: counts as read now


def test_has_seen_and_unseen() -> None:
    position = ReadPosition(4, (7, 9))
    assert [o for o in range(1, 11) if position.has_seen(o)] == [1, 2, 3, 4, 7, 9]
    assert position.unseen([2, 5, 7, 8, 9, 10]) == [5, 8, 10]


@pytest.mark.parametrize(
    "position",
    [
        ReadPosition(),
        ReadPosition(0, (1,)),
        ReadPosition(2**53 - 10, (2**53 - 1,), "e" * 127),
        normalize(1000, range(1002, 50_000, 17), "3f2a9c"),
    ],
)
def test_encoding_round_trips(position: ReadPosition) -> None:
    assert decode(encode(position)) == position


def test_the_encoding_is_compact() -> None:
    position = normalize(10_000_000, range(10_000_002, 10_000_002 + 3 * MAX_SEEN, 3))
    assert len(encode(position)) < MAX_SEEN + 16  # one byte per close offset


@pytest.mark.parametrize(
    "value", [b"", b"\x02\x00\x00", b"\x01", b"\x01\x00", b"\x01\x00\x02\x01", b"\x01\x80"]
)
def test_decode_refuses_what_this_version_did_not_write(value: bytes) -> None:
    with pytest.raises(ValueError):
        decode(value)


def test_decode_refuses_offsets_that_do_not_ascend() -> None:
    with pytest.raises(ValueError, match="ascending"):
        decode(b"\x01\x00\x05\x02\x01\x00")


# ---------------------------------------------------------------------- the merge
def test_merge_is_the_union_with_the_highest_floor() -> None:
    kept = apply([written(0, 3, 8), written(5, 9), written(0, 2, 12)])
    assert kept is not None
    assert decode(kept) == ReadPosition(5, (8, 9, 12))


def test_merge_of_nothing_held_normalizes_the_write() -> None:
    kept = merge(None, encode(ReadPosition(0, (1, 2, 5))))
    assert kept is not None and decode(kept) == ReadPosition(2, (5,))


def test_merge_ignores_an_unreadable_write_and_replaces_an_unreadable_value() -> None:
    held = written(0, 4)
    assert merge(held, b"\x09garbage") == held
    assert merge(b"\x09garbage", held) == held


def test_a_write_of_another_epoch_replaces_the_position() -> None:
    """The stream was recreated: positions restarted, the old ones mean nothing."""
    held = encode(normalize(100, [104], "old"))
    kept = merge(held, encode(normalize(0, [3], "new")))
    assert kept is not None and decode(kept) == ReadPosition(0, (3,), "new")
    kept = merge(kept, encode(normalize(0, [5], "new")))
    assert kept is not None and decode(kept) == ReadPosition(0, (3, 5), "new")


def test_epochs_over_127_bytes_are_refused() -> None:
    with pytest.raises(ValueError):
        encode(ReadPosition(epoch="e" * 128))
    with pytest.raises(ValueError):
        decode(b"\x01\x03ab")  # the epoch is cut short


def test_a_delete_forgets_the_position() -> None:
    assert merge(written(0, 4), None) is None


def test_merge_never_undoes_a_mark() -> None:
    """Two nodes' writes in either order: the later never removes the earlier's offsets."""
    a, b = written(0, 3, 5), written(4)
    for order in ([a, b], [b, a]):
        kept = apply(order)
        assert kept is not None
        position = decode(kept)
        assert all(position.has_seen(o) for o in (1, 2, 3, 4, 5))


positions = st.builds(
    lambda floor, offsets: written(floor, *offsets),
    st.integers(0, 3000),
    st.lists(st.integers(1, 4000), max_size=60),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(positions, min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_merge_gives_the_same_table_in_any_order_and_twice(
    writes: list[bytes], rng: random.Random
) -> None:
    kept = apply(writes)
    shuffled = list(writes)
    rng.shuffle(shuffled)
    assert apply(shuffled) == kept
    assert apply(writes + writes) == kept  # a write read back twice changes nothing


def test_merge_stays_order_free_when_the_bound_raises_the_floor() -> None:
    """More than MAX_SEEN offsets in all: every order still gives one position."""
    chunks = [written(0, *range(start, 4 * MAX_SEEN, 4)) for start in (1, 2, 3)]
    chunks.append(written(2 * MAX_SEEN))
    results = {apply(list(order)) for order in itertools.permutations(chunks)}
    assert len(results) == 1
    (kept,) = results
    assert kept is not None
    assert len(decode(kept).seen) <= MAX_SEEN


# ---------------------------------------------------------------------- keys
def test_entry_keys_split_back() -> None:
    key = entry_key("alice", "notes:inbox#alice")
    assert split_key(key) == ("alice", "notes:inbox#alice")


# ---------------------------------------------------------------------- marks
def body(**fields: object) -> bytes:
    return orjson.dumps(fields)


def test_a_mark_of_offsets_is_sorted_without_repeats() -> None:
    assert parse_mark(body(channel="c", offsets=[9, 3, 9])) == Mark("c", (3, 9))


def test_a_mark_up_to_a_position_and_both() -> None:
    assert parse_mark(body(channel="c", upto=7)) == Mark("c", (), 7)
    assert parse_mark(body(channel="c", upto=7, offsets=[12])) == Mark("c", (12,), 7)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "object"),
        (b"not json", "not JSON"),
        (b"[1]", "object"),
        (body(offsets=[1]), "channel"),
        (body(channel="", offsets=[1]), "channel"),
        (body(channel=7, offsets=[1]), "channel"),
        (body(channel="c"), "offsets seen, or upto"),
        (body(channel="c", offsets=[]), "offsets seen, or upto"),
        (body(channel="c", offsets=3), "list"),
        (body(channel="c", offsets=[0]), "position"),
        (body(channel="c", offsets=[-1]), "position"),
        (body(channel="c", offsets=[1.5]), "position"),
        (body(channel="c", offsets=[True]), "position"),
        (body(channel="c", offsets=["3"]), "position"),
        (body(channel="c", offsets=[2**53]), "position"),
        (body(channel="c", upto=0), "upto"),
        (body(channel="c", upto="5"), "upto"),
        (body(channel="c", offsets=[1], user="bob"), "unknown field 'user'"),
        (body(channel="c", offsets=list(range(1, MAX_MARK + 2))), f"at most {MAX_MARK}"),
    ],
)
def test_malformed_marks_are_refused(data: bytes | None, reason: str) -> None:
    with pytest.raises(ReceiptError, match=reason):
        parse_mark(data)


def test_a_query_names_one_channel() -> None:
    assert parse_query(body(channel="notes:inbox#alice")) == "notes:inbox#alice"
    with pytest.raises(ReceiptError, match="unknown field"):
        parse_query(body(channel="c", offsets=[1]))


# ---------------------------------------------------------------------- who may mark
def test_a_user_may_mark_a_channel_naming_them_or_one_the_connection_reads() -> None:
    assert may_mark("notes:inbox#alice", "alice", ()).users == frozenset({"alice"})
    assert may_mark("deal#alice,bob", "bob", ()).name == "deal#alice,bob"
    assert may_mark("news", "alice", {"news"}).name == "news"


@pytest.mark.parametrize(
    ("channel", "user", "subscribed"),
    [
        ("notes:inbox#bob", "alice", ()),  # another user's publications
        ("notes:inbox#bob", "alice", {"notes:inbox#alice"}),
        ("news", "alice", ()),  # not subscribed here
        ("notes:inbox#alice", "", ()),  # anonymous
    ],
)
def test_forged_receipts_are_refused(channel: str, user: str, subscribed: set[str]) -> None:
    with pytest.raises(PermissionError):
        may_mark(channel, user, subscribed)


def test_an_invalid_channel_name_is_a_bad_request() -> None:
    with pytest.raises(ReceiptError):
        may_mark("bad\nname", "alice", ())


# ---------------------------------------------------------------------- unread
def test_unread_counts_held_publications_not_seen() -> None:
    position = ReadPosition(10, (14, 18))
    held = [11, 14, 16, 18, 20]
    assert count_unread(position, held, complete_since=10).count == 3
    assert count_unread(position, held, complete_since=10).exact


def test_unread_is_not_exact_when_the_window_does_not_reach_the_floor() -> None:
    """The window starts after 12: publications between the floor and 12 are unknown."""
    unread = count_unread(ReadPosition(5, ()), [13, 15], complete_since=12)
    assert unread.count == 2 and not unread.exact
    assert count_unread(ReadPosition(), [], complete_since=0).exact
