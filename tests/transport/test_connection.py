"""The per-connection writer on an in-memory transport: coalescing, shared frames, the
slow-client cut and every way a WebSocket connection closes. No sockets."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from tests.fakes import settings
from tests.protocol.test_wsframes import frame
from tests.transport.memory import MemoryTransport, WriterTwin, server_frames
from tidings.codes import DisconnectCode
from tidings.config import ClientSettings
from tidings.protocol.wsframes import Opcode
from tidings.publication import Publication
from tidings.transport import websocket
from tidings.transport.websocket import UniWebSocketConnection, WebSocketConnection

TEXT, CLOSE, PONG = int(Opcode.TEXT), int(Opcode.CLOSE), int(Opcode.PONG)


def pub(offset: int, channel: str = "news") -> Publication:
    return Publication(channel, offset, orjson.dumps({"n": offset}), 0.0)


def open_conn(
    twin: WriterTwin, cls: type[WebSocketConnection] = WebSocketConnection
) -> tuple[WebSocketConnection, MemoryTransport]:
    transport = MemoryTransport()
    conn = cls(twin, transport)
    transport.set_protocol(conn)
    return conn, transport


def close_code(data: bytes) -> int:
    ((opcode, payload),) = server_frames(data)
    assert opcode == CLOSE
    return int.from_bytes(payload[:2], "big")


def counted(twin: WriterTwin, name: str, **labels: str) -> float:
    value = twin.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


# ---------------------------------------------------------------------- coalescing
def test_nothing_is_written_before_the_loop_turn_ends() -> None:
    twin = WriterTwin()
    conns = [open_conn(twin) for _ in range(3)]
    for offset in (1, 2):
        for conn, _ in conns:
            conn.deliver(pub(offset))
    assert all(t.writes == [] for _, t in conns)
    # One flush is scheduled for the turn, and each connection is in it once.
    assert len(twin.turns) == 1
    assert twin.flusher.pending == 3
    twin.end_turn()
    assert [len(t.writes) for _, t in conns] == [1, 1, 1]
    assert twin.flusher.pending == 0


def test_a_single_push_is_the_publications_shared_frame() -> None:
    twin = WriterTwin()
    (a, ta), (b, tb) = open_conn(twin), open_conn(twin)
    p = pub(7)
    a.deliver(p)
    b.deliver(p)
    twin.end_turn()
    assert ta.writes == [p.push_frame]
    # The very bytes object the publication built: encoded once for every subscriber.
    assert ta.writes[0] is p.push_frame and tb.writes[0] is p.push_frame
    assert server_frames(ta.writes[0]) == [(TEXT, p.push)]


def test_pushes_of_one_turn_are_one_newline_joined_frame() -> None:
    twin = WriterTwin()
    conn, transport = open_conn(twin)
    pubs = [pub(i, f"ch{i}") for i in (1, 2, 3)]
    for p in pubs:
        conn.deliver(p)
    twin.end_turn()
    assert server_frames(b"".join(transport.writes)) == [
        (TEXT, b"\n".join(p.push for p in pubs))
    ]
    assert len(transport.writes) == 1


def test_subscribers_with_the_same_pushes_queued_share_one_batch_frame() -> None:
    twin = WriterTwin()
    conns = [open_conn(twin) for _ in range(3)]
    p, q, r = pub(1), pub(2), pub(3)
    for conn, _ in conns:
        conn.deliver(p)
        conn.deliver(q)
    conns[2][0].deliver(r)
    twin.end_turn()
    (_, ta), (_, tb), (_, tc) = conns
    assert ta.writes[0] is tb.writes[0]
    assert server_frames(ta.writes[0]) == [(TEXT, p.push + b"\n" + q.push)]
    assert server_frames(tc.writes[0]) == [(TEXT, b"\n".join(x.push for x in (p, q, r)))]


def test_a_later_turn_is_a_write_of_its_own() -> None:
    twin = WriterTwin()
    conn, transport = open_conn(twin)
    conn.deliver(pub(1))
    twin.end_turn()
    conn.deliver(pub(2))
    assert len(twin.turns) == 1
    twin.end_turn()
    assert transport.writes == [pub(1).push_frame, pub(2).push_frame]


def test_push_only_connections_write_the_bare_push() -> None:
    twin = WriterTwin()
    conn, transport = open_conn(twin, UniWebSocketConnection)
    p, q = pub(1), pub(2)
    conn.deliver(p)
    twin.end_turn()
    conn.deliver(p)
    conn.deliver(q)
    twin.end_turn()
    assert transport.writes[0] is p.uni_frame
    assert server_frames(transport.writes[1]) == [(TEXT, p.uni + b"\n" + q.uni)]


def test_replies_go_out_at_once_behind_the_pushes_already_queued() -> None:
    twin = WriterTwin()
    conn, transport = open_conn(twin)
    p = pub(1)
    conn.deliver(p)
    conn.send([b'{"id":1}'])
    assert server_frames(b"".join(transport.writes)) == [(TEXT, p.push + b'\n{"id":1}')]
    twin.end_turn()  # the turn's flush finds nothing left
    assert len(transport.writes) == 1


def test_nothing_is_queued_for_an_empty_reply() -> None:
    twin = WriterTwin()
    conn, transport = open_conn(twin)
    conn.send([])
    assert transport.writes == [] and twin.turns == []


# ---------------------------------------------------------------------- slow clients
def slow_twin() -> WriterTwin:
    return WriterTwin(settings(client=ClientSettings(max_queue_bytes=1024)))


async def test_a_client_past_its_queue_limit_is_cut_with_3008_and_reset_after_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(websocket, "_CLOSE_GRACE", 0.05)
    twin = slow_twin()
    conn, transport = open_conn(twin)
    conn.deliver(pub(1))
    transport.unsent = 1024  # at the limit: still served
    twin.end_turn()
    assert not conn.closing
    conn.deliver(pub(2))
    transport.unsent = 1025
    twin.end_turn()
    assert conn.closing
    assert transport.writes[1] == pub(2).push_frame
    assert close_code(transport.writes[2]) == DisconnectCode.SLOW
    assert counted(twin, "tidings_slow_disconnects_total") == 1
    assert counted(twin, "tidings_disconnects_total", code="3008") == 1
    # Cut: what comes after is dropped, not queued.
    conn.deliver(pub(3))
    assert twin.turns == [] and len(transport.writes) == 3
    # The client never answers the close frame: the socket is reset, its buffer freed.
    assert not transport.closed
    await asyncio.sleep(0.2)
    assert transport.aborted


async def test_one_reply_past_the_limit_is_allowed_until_the_client_drains_it() -> None:
    twin = slow_twin()
    conn, transport = open_conn(twin)
    transport.holds = True
    publications = b",".join(b'{"data":%d,"offset":%d}' % (n, n) for n in range(300))
    reply = b'{"id":2,"subscribe":{"recovered":true,"publications":[' + publications + b"]}}"
    assert len(reply) > 4 * 1024
    conn.send([reply])  # a recovery's reply, four times the limit: not slow
    assert not conn.closing
    for n in range(10):  # live pushes while it drains keep the usual room
        conn.deliver(pub(n))
        twin.end_turn()
    assert not conn.closing
    transport.unsent = 0  # drained: the limit is the limit again
    conn.deliver(pub(11))
    twin.end_turn()
    transport.unsent += 1024
    conn.deliver(pub(12))
    twin.end_turn()
    assert conn.closing
    assert close_code(transport.writes[-1]) == DisconnectCode.SLOW


async def test_a_client_that_never_drains_the_large_reply_is_cut() -> None:
    twin = slow_twin()
    conn, transport = open_conn(twin)
    transport.holds = True
    conn.send([b'{"id":2,"subscribe":{"data":"' + b"x" * 4096 + b'"}}'])
    assert not conn.closing
    conn.send([b'{"id":3,"rpc":{"data":"' + b"y" * 1100 + b'"}}'])  # past limit + the reply
    assert conn.closing
    assert close_code(transport.writes[-1]) == DisconnectCode.SLOW


async def test_a_client_that_answers_the_close_is_closed_without_a_reset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(websocket, "_CLOSE_GRACE", 0.05)
    twin = WriterTwin()
    conn, transport = open_conn(twin)
    conn.close(DisconnectCode.SHUTDOWN)
    assert close_code(transport.writes[-1]) == DisconnectCode.SHUTDOWN
    conn.data_received(frame(Opcode.CLOSE, int(DisconnectCode.SHUTDOWN).to_bytes(2, "big")))
    assert transport.closed
    conn.connection_lost(None)
    await asyncio.sleep(0.1)
    assert not transport.aborted


# ---------------------------------------------------------------------- closing
async def test_close_drops_the_queue_and_stops_the_timers() -> None:
    twin = WriterTwin()
    conn, transport = open_conn(twin)
    twin.timers.schedule(conn, twin.mono + 10)
    conn.deliver(pub(1))
    conn.close(DisconnectCode.SHUTDOWN, "bye")
    twin.end_turn()
    ((opcode, payload),) = server_frames(b"".join(transport.writes))
    assert opcode == CLOSE and payload == int(DisconnectCode.SHUTDOWN).to_bytes(2, "big") + b"bye"
    assert len(twin.timers) == 0
    conn.close(DisconnectCode.SLOW)  # a second close is no-op
    assert len(transport.writes) == 1
    assert counted(twin, "tidings_disconnects_total", code="3001") == 1
    conn.connection_lost(None)


async def test_a_client_that_closes_first_gets_its_code_back_and_a_hang_up() -> None:
    twin = WriterTwin()
    conn, transport = open_conn(twin)
    conn.deliver(pub(1))
    conn.data_received(frame(Opcode.CLOSE, (1000).to_bytes(2, "big")))
    assert transport.closed and not transport.aborted
    assert close_code(transport.writes[0]) == 1000
    twin.end_turn()  # the pending push was dropped with the close
    assert len(transport.writes) == 1


async def test_a_protocol_violation_closes_with_its_code() -> None:
    twin = WriterTwin()
    conn, transport = open_conn(twin)
    conn.data_received(frame(Opcode.TEXT, b"{}", masked=False))
    assert conn.closing
    assert close_code(transport.writes[0]) == 1002
    assert counted(twin, "tidings_disconnects_total", code="1002") == 1
    conn.connection_lost(None)


def test_a_ping_is_answered_with_its_payload() -> None:
    twin = WriterTwin()
    conn, transport = open_conn(twin)
    conn.data_received(frame(Opcode.PING, b"abc"))
    assert server_frames(transport.writes[0]) == [(PONG, b"abc")]


def test_nothing_is_written_to_a_transport_already_closing() -> None:
    twin = WriterTwin()
    conn, transport = open_conn(twin)
    conn.deliver(pub(1))
    transport.closed = True
    twin.end_turn()
    conn.close(DisconnectCode.SHUTDOWN)
    assert transport.writes == []


async def test_a_lost_socket_ends_the_session_and_leaves_the_node() -> None:
    twin = WriterTwin()
    conn, _ = open_conn(twin)
    conn.start(b"", None)
    assert conn in twin.live and len(twin.timers) == 1
    conn.connection_lost(None)
    assert conn not in twin.live and len(twin.timers) == 0
    assert conn.session is None
    conn.deliver(pub(1))
    assert twin.turns == []
