"""The lean WebSocket connection on a real socket: frames in, frames and closes out."""

from __future__ import annotations

import orjson
import pytest

from tests.integration.conftest import ServerFactory
from tests.integration.live import LiveServer, token, wait_until
from tests.transport.raw import RawConnection, frame, upgrade_head
from tidings.protocol.wsframes import Opcode

pytestmark = pytest.mark.integration

CONNECT = orjson.dumps({"id": 1, "connect": {"token": token("alice")}})


async def _open(server: LiveServer, path: str = "/connection/websocket") -> RawConnection:
    raw = await RawConnection.open(server.port)
    await raw.send(upgrade_head(server.port, path))
    assert (await raw.response())[0] == 101
    return raw


async def _connected(server: LiveServer) -> RawConnection:
    raw = await _open(server)
    await raw.send(frame(Opcode.TEXT, CONNECT))
    assert "connect" in await raw.message()  # type: ignore[operator]
    return raw


async def _metric(server: LiveServer, name: str, **labels: str) -> float:
    return (await server.metrics()).get((name, tuple(sorted(labels.items()))), 0.0)


async def test_a_ping_gets_a_pong_with_its_payload(server: LiveServer) -> None:
    raw = await _connected(server)
    await raw.send(frame(Opcode.PING, b"are you there"))
    assert await raw.frame() == (Opcode.PONG, b"are you there")
    # An unsolicited pong is ignored; the connection goes on.
    await raw.send(frame(Opcode.PONG, b"x") + frame(Opcode.PING))
    assert await raw.frame() == (Opcode.PONG, b"")


async def test_a_fragmented_message_is_reassembled(server: LiveServer) -> None:
    raw = await _open(server)
    third = len(CONNECT) // 3
    await raw.send(
        frame(Opcode.TEXT, CONNECT[:third], fin=False)
        + frame(Opcode.PING, b"between")
        + frame(Opcode.CONTINUATION, CONNECT[third : 2 * third], fin=False)
    )
    assert await raw.frame() == (Opcode.PONG, b"between")
    await raw.send(frame(Opcode.CONTINUATION, CONNECT[2 * third :]))
    reply = await raw.message()
    assert reply["id"] == 1 and "connect" in reply  # type: ignore[index,operator]


async def test_binary_frames_carry_commands_too(server: LiveServer) -> None:
    raw = await _open(server)
    await raw.send(frame(Opcode.BINARY, CONNECT))
    assert "connect" in await raw.message()  # type: ignore[operator]


async def test_a_message_over_the_limit_closes_with_1009(serve: ServerFactory) -> None:
    server = await serve({"client.max_frame_bytes": 1024})
    raw = await _connected(server)
    await raw.send(frame(Opcode.TEXT, b"x" * 2000))
    code, reason = await raw.close_frame()
    assert code == 1009
    assert "client.max_frame_bytes" in reason
    assert await raw.eof(timeout=5)  # the server hangs up after its close frame
    await wait_until(lambda: not server.node.live, what="the connection to be released")
    assert server.node.connections == 0
    assert await _metric(server, "tidings_disconnects_total", code="1009") == 1


async def test_fragments_over_the_limit_together_close_with_1009(serve: ServerFactory) -> None:
    server = await serve({"client.max_frame_bytes": 1024})
    raw = await _connected(server)
    await raw.send(frame(Opcode.TEXT, b"x" * 700, fin=False))
    await raw.send(frame(Opcode.CONTINUATION, b"x" * 700))
    assert (await raw.close_frame())[0] == 1009


async def test_an_unmasked_frame_closes_with_1002(server: LiveServer) -> None:
    raw = await _connected(server)
    await raw.send(frame(Opcode.TEXT, b'{"id":2}', masked=False))
    assert (await raw.close_frame())[0] == 1002
    # A well-behaved client answers the close; the server then hangs up at once.
    await raw.send(frame(Opcode.CLOSE, (1002).to_bytes(2, "big")))
    assert await raw.eof(timeout=5)
    await wait_until(lambda: not server.node.live, what="the connection to be released")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(Opcode.TEXT, b"\xff\xfe"), 1007),
        (frame(Opcode.TEXT, b"a", rsv=0x40), 1002),
        (frame(0x3, b"a"), 1002),
        (frame(Opcode.CONTINUATION, b"a"), 1002),
        (frame(Opcode.PING, b"x" * 126), 1002),
        (frame(Opcode.PING, b"x", fin=False), 1002),
    ],
)
async def test_protocol_violations(server: LiveServer, data: bytes, code: int) -> None:
    raw = await _connected(server)
    await raw.send(data)
    assert (await raw.close_frame())[0] == code
    await wait_until(lambda: server.node.connections == 0, what="the session to be released")


async def test_a_client_close_is_echoed_and_the_connection_ends(server: LiveServer) -> None:
    raw = await _connected(server)
    await raw.send(frame(Opcode.CLOSE, (1000).to_bytes(2, "big") + b"bye"))
    assert await raw.frame() == (Opcode.CLOSE, (1000).to_bytes(2, "big"))
    assert await raw.eof()
    await wait_until(lambda: not server.node.live, what="the connection to be released")
    assert server.node.hub.subscriptions == 0


async def test_a_server_close_ends_once_the_client_answers(serve: ServerFactory) -> None:
    server = await serve({"client.stale_timeout": 1})
    raw = await _open(server)
    code, reason = await raw.close_frame(timeout=3)
    assert (code, reason) == (3502, "stale")
    await raw.send(frame(Opcode.CLOSE, (3502).to_bytes(2, "big")))
    # Well before the close grace (2 s): the answer completes the closing handshake.
    assert await raw.eof(timeout=1)


async def test_a_client_that_never_answers_the_close_is_dropped(serve: ServerFactory) -> None:
    server = await serve({"client.stale_timeout": 1})
    raw = await _open(server)
    assert (await raw.close_frame(timeout=3))[0] == 3502
    assert await raw.eof(timeout=5)  # after the grace period
    await wait_until(lambda: not server.node.live, what="the connection to be released")


async def test_gauges_follow_open_connections(server: LiveServer) -> None:
    raw = await _connected(server)
    uni = await _open(server, "/connection/uni_websocket")
    assert await _metric(server, "tidings_connections", transport="websocket") == 1
    assert await _metric(server, "tidings_connections", transport="uni_websocket") == 1
    raw.close()
    uni.close()
    await wait_until(lambda: not server.node.live, what="the connections to end")
    assert await _metric(server, "tidings_connections", transport="websocket") == 0
    assert await _metric(server, "tidings_connections", transport="uni_websocket") == 0
