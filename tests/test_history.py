"""History windows and the recovery decision."""

from __future__ import annotations

import pytest

from tidings.history import ChannelWindow, History
from tidings.protocol.messages import RecoverPosition
from tidings.publication import Publication
from tidings.subscription import Recovery

NOW = 1_700_000_000.0
SIZE = 100
TTL = 300.0


def pub(offset: int, channel: str = "c", at: float = NOW) -> Publication:
    return Publication(channel, offset, b'{"o":%d}' % offset, at)


def offsets(recovery: Recovery) -> list[int]:
    return [p.offset for p in recovery.publications]


def recover(
    h: History,
    since: int,
    *,
    head: int,
    epoch: str = "e",
    client_epoch: str = "e",
    channel: str = "c",
    size: int = SIZE,
    ttl: float = TTL,
    now: float = NOW,
) -> Recovery:
    return h.recover(
        channel, RecoverPosition(since, client_epoch), epoch, head, size=size, ttl=ttl, now=now
    )


def filled(*offs: int, floor: int = 0, size: int = SIZE, channel: str = "c") -> History:
    h = History(floor)
    for o in offs:
        h.append(pub(o, channel), size, TTL, NOW)
    return h


class TestRecover:
    def test_empty_history_on_a_fresh_node(self) -> None:
        assert recover(History(), 0, head=0) == Recovery(True)

    def test_empty_channel_since_the_floor(self) -> None:
        h = History(floor=10)
        assert recover(h, 10, head=15) == Recovery(True)
        assert recover(h, 12, head=15) == Recovery(True)
        assert recover(h, 9, head=15) == Recovery(False)  # before the node read anything

    def test_exact_top(self) -> None:
        h = filled(2, 5, 9)
        assert recover(h, 9, head=9) == Recovery(True)

    def test_missed_items_in_order(self) -> None:
        h = filled(2, 5, 9)
        r = recover(h, 2, head=9)
        assert r.recovered and offsets(r) == [5, 9] and r.skip_until == 0

    def test_since_between_offsets(self) -> None:
        # Offsets are not contiguous: 6 is simply a position where nothing hit this channel.
        assert offsets(recover(filled(2, 5, 9), 6, head=9)) == [9]

    def test_since_zero_recovers_all(self) -> None:
        assert offsets(recover(filled(1, 2, 3), 0, head=3)) == [1, 2, 3]

    def test_other_channels_do_not_count(self) -> None:
        h = filled(1, 3)
        h.append(pub(2, "other"), SIZE, TTL, NOW)
        assert offsets(recover(h, 0, head=3)) == [1, 3]
        assert recover(h, 0, head=3, channel="nothing") == Recovery(True)

    def test_evicted_by_size(self) -> None:
        h = filled(1, 2, 3, 4, 5, size=3)
        assert h.window("c") is not None and h.window("c").complete_since == 2
        assert recover(h, 1, head=5, size=3) == Recovery(False)
        assert offsets(recover(h, 2, head=5, size=3)) == [3, 4, 5]
        assert offsets(recover(h, 4, head=5, size=3)) == [5]

    def test_size_shrunk_since_append_is_applied_on_recover(self) -> None:
        h = filled(1, 2, 3, 4, 5)
        assert recover(h, 2, head=5, size=2) == Recovery(False)
        assert offsets(recover(h, 3, head=5, size=2)) == [4, 5]

    def test_ttl_expiry(self) -> None:
        h = History()
        h.append(pub(1, at=NOW - 400), SIZE, TTL, NOW - 400)
        h.append(pub(2, at=NOW - 100), SIZE, TTL, NOW - 100)
        assert offsets(recover(h, 0, head=2, now=NOW - 100)) == [1, 2]
        assert recover(h, 0, head=2) == Recovery(False)  # offset 1 aged out
        assert offsets(recover(h, 1, head=2)) == [2]
        assert recover(h, 1, head=2, now=NOW + 300) == Recovery(False)
        assert recover(h, 2, head=2, now=NOW + 300) == Recovery(True)

    def test_other_epoch(self) -> None:
        h = filled(1, 2)
        assert recover(h, 1, head=2, client_epoch="old") == Recovery(False)

    def test_empty_epoch_means_any(self) -> None:
        assert offsets(recover(filled(1, 2), 1, head=2, client_epoch="")) == [2]

    @pytest.mark.parametrize(("size", "ttl"), [(0, TTL), (SIZE, 0.0), (-1, TTL)])
    def test_no_history_never_recovers(self, size: int, ttl: float) -> None:
        assert recover(filled(1), 1, head=1, size=size, ttl=ttl) == Recovery(False)

    def test_client_ahead_of_the_node(self) -> None:
        h = filled(1, 2)
        assert recover(h, 7, head=2) == Recovery(True, (), 7)
        assert recover(History(floor=3), 9, head=5) == Recovery(True, (), 9)

    def test_floor_applies_to_channels_first_seen_later(self) -> None:
        h = History(floor=100)
        h.append(pub(105), SIZE, TTL, NOW)
        assert recover(h, 99, head=105) == Recovery(False)
        assert offsets(recover(h, 100, head=105)) == [105]
        assert offsets(recover(h, 101, head=105)) == [105]


class TestWindow:
    def test_trim_by_size_and_ttl(self) -> None:
        w = ChannelWindow(0)
        for o, at in [(1, NOW - 50), (2, NOW - 40), (3, NOW - 5), (4, NOW)]:
            w.keep(pub(o, at=at))
        w.trim(3, TTL, NOW)
        assert w.offsets() == [2, 3, 4] and w.complete_since == 1
        w.trim(3, 10.0, NOW)
        assert w.offsets() == [3, 4] and w.complete_since == 2

    def test_append_without_history_moves_the_proof(self) -> None:
        h = History(floor=5)
        h.append(pub(8), 0, TTL, NOW)
        w = h.window("c")
        assert w is not None and list(w.items) == [] and w.complete_since == 8
        h.append(pub(9), SIZE, 0.0, NOW)
        assert h.window("c").complete_since == 9  # type: ignore[union-attr]

    def test_reset(self) -> None:
        h = filled(1, 2)
        h.reset(50)
        assert len(h) == 0 and h.floor == 50 and h.window("c") is None

    def test_sweep(self) -> None:
        h = History(floor=0)
        h.append(pub(1, "old", at=NOW - 1000), SIZE, TTL, NOW - 1000)
        h.append(pub(2, "fresh"), SIZE, TTL, NOW)
        h.append(pub(3, "nohist"), 0, TTL, NOW)
        dropped = h.sweep(NOW, lambda name: (SIZE, TTL))
        # "old" is empty now but proves completeness after 1 > floor: kept; same for nohist.
        assert dropped == 0 and len(h) == 3
        h.floor = 3
        assert h.sweep(NOW, lambda name: (SIZE, TTL)) == 2
        assert h.window("fresh") is not None and len(h) == 1


def test_kept_entries_are_not_tracked_by_the_garbage_collector() -> None:
    import gc

    history = History()
    history.append(pub(1), 10, 60.0, NOW)
    gc.collect()
    window = history.window("c")
    assert window is not None and not gc.is_tracked(window.items[0])


class TestReadAndRemove:
    def filled(self) -> History:
        h = History()
        for offset in (2, 4, 6, 8):
            h.append(Publication("c", offset, b"%d" % offset, 100.0), 10, 60.0, 100.0)
        return h

    def read(self, h: History, **kwargs: object) -> list[int] | None:
        args: dict[str, object] = {"limit": -1, "since": None, "reverse": False}
        args |= {"epoch": "e", "head": 9, "size": 10, "ttl": 60.0, "now": 100.0}
        args.update(kwargs)
        page = h.read("c", **args)  # type: ignore[arg-type]
        return None if page is None else [p.offset for p in page.publications]

    def test_all_and_limits(self) -> None:
        h = self.filled()
        assert self.read(h) == [2, 4, 6, 8]
        assert self.read(h, limit=2) == [2, 4]
        assert self.read(h, limit=0) == []
        assert self.read(h, limit=3, reverse=True) == [8, 6, 4]

    def test_since(self) -> None:
        h = self.filled()
        assert self.read(h, since=RecoverPosition(4, "e")) == [6, 8]
        assert self.read(h, since=RecoverPosition(6, ""), reverse=True) == [4, 2]
        assert self.read(h, since=RecoverPosition(4, "other")) is None

    def test_ttl_trims_before_reading(self) -> None:
        h = self.filled()
        assert self.read(h, now=200.0) == []
        assert self.read(h, now=200.0, since=RecoverPosition(4, "e")) is None

    def test_page_carries_the_position(self) -> None:
        page = self.filled().read(
            "c", limit=0, since=None, reverse=False, epoch="e", head=9, size=10, ttl=60, now=100
        )
        assert page is not None and (page.epoch, page.offset) == ("e", 9)

    def test_remove(self) -> None:
        h = self.filled()
        h.remove("c", 10)
        assert self.read(h) == []
        assert self.read(h, since=RecoverPosition(8, "e")) is None
        assert self.read(h, since=RecoverPosition(10, "e")) == []
        h.remove("unseen", 12)
        window = h.window("unseen")
        assert window is not None and window.complete_since == 12
