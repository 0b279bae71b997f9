"""The node on its own: records in, pushes out through the flusher; limits, publishing,
draining. The embedded log and in-memory transports: no sockets, no broker."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tests.fakes import Sink, session_of, settings
from tests.test_lifecycle import Cluster, cluster_settings
from tests.transport.memory import MemoryTransport, server_frames
from tidings.codes import DisconnectCode
from tidings.config import ClientSettings, Settings
from tidings.log.memory import MemoryLog
from tidings.node import Node, PublishError
from tidings.record import Record
from tidings.router import CHANNEL_HEADER
from tidings.transport.websocket import WebSocketConnection


def record(position: int, *channels: str, data: Any = None) -> Record:
    body = orjson.dumps({"n": position} if data is None else data)
    return Record(position, "app.event", body, 0.0, {CHANNEL_HEADER: ",".join(channels)})


def make_node(config: Settings | None = None, **kwargs: Any) -> Node:
    return Node(config or settings(), MemoryLog(), name="test", **kwargs)


def counted(node: Node, name: str, **labels: str) -> float:
    return node.metrics.registry.get_sample_value(name, labels) or 0.0


def subscribed(node: Node, *channels: str) -> tuple[WebSocketConnection, MemoryTransport]:
    transport = MemoryTransport()
    conn = WebSocketConnection(node, transport)
    for channel in channels:
        node.subscribe(conn, channel, None)
    return conn, transport


# ---------------------------------------------------------------------- events in
async def test_a_batch_of_records_is_one_write_per_connection_after_the_turn() -> None:
    node = make_node()
    (_, ta), (_, tb) = subscribed(node, "news", "sport"), subscribed(node, "news")
    node.on_records([record(1, "news"), record(2, "sport"), record(3, "news")])
    assert ta.writes == [] and tb.writes == []
    await asyncio.sleep(0)  # the end of the loop turn
    ((_, payload),) = server_frames(b"".join(ta.writes))
    assert len(ta.writes) == 1
    assert [orjson.loads(line)["push"]["pub"]["offset"] for line in payload.split(b"\n")] == [
        1,
        2,
        3,
    ]
    assert len(tb.writes) == 1 and len(server_frames(tb.writes[0])[0][1].split(b"\n")) == 2
    assert counted(node, "tidings_pushes_total") == 5
    assert counted(node, "tidings_publications_total") == 3


async def test_one_event_is_one_shared_frame_for_every_subscriber() -> None:
    node = make_node()
    (_, ta), (_, tb) = subscribed(node, "news"), subscribed(node, "news")
    node.on_records([record(1, "news")])
    await asyncio.sleep(0)
    assert ta.writes[0] is tb.writes[0]


def test_an_event_for_several_channels_reaches_each_with_the_same_position() -> None:
    node = make_node()
    a, b = Sink("a"), Sink("b")
    node.subscribe(a, "news", None)
    node.subscribe(b, "sport", None)
    node.on_records([record(5, "news", "sport")])
    assert [(p.channel, p.offset) for p in a.pubs + b.pubs] == [("news", 5), ("sport", 5)]
    assert node.head == 5


def test_a_repeated_position_is_skipped() -> None:
    node = make_node()
    sink = Sink()
    node.subscribe(sink, "news", None)
    node.on_records([record(1, "news"), record(2, "news")])
    node.on_records([record(2, "news"), record(3, "news")])
    assert [p.offset for p in sink.pubs] == [1, 2, 3]


def test_a_channel_of_an_unknown_namespace_is_rejected_and_counted() -> None:
    node = make_node()
    sink = Sink()
    node.subscribe(sink, "news", None)
    node.on_records([record(1, "nosuch:x", "news")])
    assert counted(node, "tidings_events_rejected_total", kind="unknown_namespace") == 1
    assert counted(node, "tidings_events_in_total") == 1
    assert [p.channel for p in sink.pubs] == ["news"]


def test_the_first_records_set_the_history_floor_and_an_epoch_change_resets_it() -> None:
    node = make_node()
    node.on_records([record(10, "news")])
    assert node.history.floor == 9
    node.on_epoch("other")
    assert node.head == 0
    node.on_records([record(1, "news")])
    assert node.history.floor == 0 and node.head == 1


# ---------------------------------------------------------------------- publishing
async def test_publish_goes_through_the_log_to_the_subscribers() -> None:
    node = make_node()
    sink = Sink()
    node.subscribe(sink, "news", None)
    await node.log.start(node, 0)
    await node.publish(["news"], {"hello": 1})
    assert [orjson.loads(p.data) for p in sink.pubs] == [{"hello": 1}]


@pytest.mark.parametrize(
    ("channels", "data"),
    [([], 1), (["nosuch:x"], 1), ([""], 1), ([7], 1), (["news"], "x" * (1 << 20))],
)
async def test_an_invalid_publish_is_refused(channels: list[Any], data: object) -> None:
    node = make_node()
    await node.log.start(node, 0)
    with pytest.raises(PublishError):
        await node.publish(channels, data)
    assert node.log.position == 0


# ---------------------------------------------------------------------- limits
def test_connection_limits_per_node_and_per_user() -> None:
    limits = ClientSettings(max_connections=3, max_connections_per_user=2)
    node = make_node(settings(client=limits))
    alice = [session_of("alice") for _ in range(3)]
    assert node.admit(alice[0]) is None and node.admit(alice[1]) is None
    assert node.admit(alice[2]) is DisconnectCode.CONNECTION_LIMIT
    assert node.admit(session_of("bob")) is None
    assert node.admit(session_of("carol")) is DisconnectCode.CONNECTION_LIMIT
    node.release(alice[0])
    assert node.connections == 2
    assert node.admit(alice[2]) is None


def test_connections_per_address_are_counted_per_second() -> None:
    now = [100.2]
    node = make_node(
        settings(client=ClientSettings(connections_per_ip_per_second=2)), monotonic=lambda: now[0]
    )
    assert [node.admit_ip("10.0.0.1") for _ in range(3)] == [True, True, False]
    assert node.admit_ip("10.0.0.2")
    now[0] = 101.0
    assert node.admit_ip("10.0.0.1")


async def test_drain_closes_every_connection_with_3001_and_refuses_new_ones() -> None:
    node = make_node()
    conn, transport = subscribed(node)
    conn.start(b"", None)
    assert node.live == {conn}
    node.drain()
    assert not node.ready
    assert int.from_bytes(server_frames(transport.writes[-1])[0][1][:2], "big") == 3001
    assert node.admit(session_of("alice")) is DisconnectCode.SHUTDOWN
    waiting = asyncio.ensure_future(node.wait_closed())
    await asyncio.sleep(0)
    assert not waiting.done()
    conn.connection_lost(None)
    await asyncio.wait_for(waiting, 1)


# ---------------------------------------------------------------------- web push senders
def test_push_senders_are_the_settled_workers_or_every_live_one_while_none_is() -> None:
    """The workers WebPush ranks each user over (PushFeed.senders): the same list on
    every worker once settled, and a worker that has just started is not among them (so
    it sends nothing) while the others are."""
    cluster = Cluster(cluster_settings())
    w1, w2 = cluster.add("w1"), cluster.add("w2")

    def senders(node: Node) -> list[str]:
        return sorted(node.push_feed.senders())

    cluster.beat(Cluster.HEARTBEAT)  # they know each other; none has settled
    assert senders(w1) == senders(w2) == ["w1", "w2"]
    cluster.beat(Cluster.TTL + 1)
    assert senders(w1) == senders(w2) == ["w1", "w2"]
    w3 = cluster.add("w3")
    cluster.beat(Cluster.HEARTBEAT)
    assert senders(w1) == senders(w2) == senders(w3) == ["w1", "w2"]
    cluster.beat(Cluster.TTL + 1)
    assert senders(w1) == senders(w2) == senders(w3) == ["w1", "w2", "w3"]
