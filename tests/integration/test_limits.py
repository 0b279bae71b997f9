"""Per-connection and per-node limits: slow readers, big frames, users, addresses, capacity."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

import aiohttp
import orjson
import pytest

from tests.integration.conftest import ServerFactory
from tests.integration.live import connected, open_ws, scaled, token, wait_until
from tidings.transport.websocket import WebSocketConnection

pytestmark = pytest.mark.integration


def _client_frame(payload: bytes) -> bytes:
    """A masked client text frame (RFC 6455 §5.3)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((0x81, 0x80 | 126)) + struct.pack("!H", n)
    else:
        header = bytes((0x81, 0x80 | 127)) + struct.pack("!Q", n)
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _released(transport: asyncio.Transport) -> bool:
    """Whether a transport dropped its buffer and closed its socket."""
    sock = transport.get_extra_info("socket")
    return transport.get_write_buffer_size() == 0 and (sock is None or sock.fileno() == -1)


class RawClient:
    """A WebSocket client on a bare socket with a tiny receive buffer, which reads only
    when told to: the slowest reader there is."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    @classmethod
    async def connect(cls, port: int, path: str = "/connection/websocket") -> RawClient:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        client = cls(sock)
        head = await client._read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        return client

    async def _read_until(self, marker: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        while marker not in self.buffer:
            chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), scaled(2))
            assert chunk, "connection closed"
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    async def send(self, *commands: object) -> None:
        payload = b"\n".join(orjson.dumps(c) for c in commands)
        await asyncio.get_running_loop().sock_sendall(self.sock, _client_frame(payload))

    async def read_frame(self) -> bytes:
        """One unfragmented, unmasked server frame's payload."""
        loop = asyncio.get_running_loop()

        async def need(n: int) -> None:
            while len(self.buffer) < n:
                chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), scaled(2))
                assert chunk, "connection closed"
                self.buffer += chunk

        await need(2)
        n, start = self.buffer[1] & 0x7F, 2
        if n == 126:
            await need(4)
            n, start = struct.unpack("!H", self.buffer[2:4])[0], 4
        elif n == 127:
            await need(10)
            n, start = struct.unpack("!Q", self.buffer[2:10])[0], 10
        await need(start + n)
        payload, self.buffer = self.buffer[start : start + n], self.buffer[start + n :]
        return payload

    def close(self) -> None:
        self.sock.close()


async def test_slow_client_is_cut_with_3008_and_freed_while_others_keep_receiving(
    serve: ServerFactory,
) -> None:
    server = await serve({"client.max_queue_bytes": 1024, "amqp.max_message_bytes": 65536})
    node = server.node
    normal, _ = await connected(server, "normal", subscribe=("feed",))
    slow = await RawClient.connect(server.port)
    try:
        # connect+subscribe are answered; after that, the slow client never reads again.
        await slow.send(
            {"id": 1, "connect": {"token": token("slow")}},
            {"id": 2, "subscribe": {"channel": "feed"}},
        )
        await wait_until(lambda: node.hub.subscriptions == 2, what="the slow client to subscribe")
        conns = [c for c in node.live if c.session and c.session.user == "slow"]  # type: ignore[attr-defined]
        assert len(conns) == 1
        slow_conn = conns[0]
        assert isinstance(slow_conn, WebSocketConnection)
        transport = slow_conn.transport

        payload = "x" * 32_000
        sent = 0
        # Kernel buffers absorb a few megabytes first; the cap keeps a broken limit finite.
        while not slow_conn.closing and sent < 1000:
            await node.publish(["feed"], {"i": sent, "pad": payload})
            sent += 1
            pub = (await normal.message())["push"]["pub"]
            assert pub["data"]["i"] == sent - 1  # the normal reader keeps up, in order
        assert slow_conn.closing, f"not cut after {sent} publications of 32 kB"

        # The server gives up on the close handshake and aborts: the queue is freed.
        await wait_until(lambda: slow_conn not in node.live, timeout=5, what="the slow client")
        await wait_until(
            lambda: _released(transport),
            timeout=2,
            what=f"the slow client's socket to be aborted (still {transport})",
        )
        assert node.connections == 1
        assert node.hub.subscriptions == 1

        metrics = await server.metrics()
        assert metrics["tidings_disconnects_total", (("code", "3008"),)] == 1
        assert metrics["tidings_slow_disconnects_total", ()] == 1

        await node.publish(["feed"], {"after": True})
        assert (await normal.message())["push"]["pub"]["data"] == {"after": True}
    finally:
        slow.close()


async def test_frame_over_the_limit_closes_with_1009(serve: ServerFactory) -> None:
    server = await serve({"client.max_frame_bytes": 1024})
    client, _ = await connected(server)
    await client.ws.send_str('{"id":2,"subscribe":{"channel":"' + "x" * 2000 + '"}}')
    assert await client.close_code() == 1009  # the SDK treats it as terminal
    await wait_until(lambda: not server.node.live, what="the connection to be released")
    assert server.node.connections == 0


async def test_frame_under_the_limit_is_fine(serve: ServerFactory) -> None:
    server = await serve({"client.max_frame_bytes": 1024})
    client, _ = await connected(server)
    await client.send({"id": 2, "subscribe": {"channel": "x" * 200}})
    assert (await client.message())["id"] == 2


async def test_per_user_connection_limit_closes_with_3504(serve: ServerFactory) -> None:
    server = await serve({"client.max_connections_per_user": 2})
    first, _ = await connected(server, "alice")
    _second, _ = await connected(server, "alice")
    third = await open_ws(server)
    await third.send({"id": 1, "connect": {"token": token("alice")}})
    assert await third.close_code() == 3504
    _other, _ = await connected(server, "bob")  # the limit is per user
    await first.ws.close()
    await wait_until(lambda: server.node.connections == 2, what="alice's first connection to go")
    _again, _ = await connected(server, "alice")  # a slot is free again


async def test_node_capacity(serve: ServerFactory) -> None:
    server = await serve({"client.max_connections": 1})
    # Two upgrades before either authenticates: the second connect is refused with 3504.
    a = await open_ws(server)
    b = await open_ws(server)
    await a.send({"id": 1, "connect": {"token": token("alice")}})
    assert "connect" in await a.message()
    await b.send({"id": 1, "connect": {"token": token("bob")}})
    assert await b.close_code() == 3504
    # Once full, upgrades are refused with 503 before the protocol starts.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await open_ws(server)
    assert refused.value.status == 503


async def test_per_ip_rate_limit_is_429(serve: ServerFactory) -> None:
    server = await serve({"client.connections_per_ip_per_second": 3})
    url = f"{server.url}/connection/websocket"
    # At most 3 a second: within 8 quick attempts some second's window must overflow.
    statuses = []
    for _ in range(8):
        async with server.http.get(url) as r:
            statuses.append(r.status)
            if r.status == 429:
                assert r.headers["Retry-After"] == "1"
                assert "connections_per_ip_per_second" in (await r.json())["error"]
                break
    assert statuses[0] != 429
    assert statuses[-1] == 429, statuses
    # The same for a real upgrade.
    for _ in range(8):
        try:
            client = await open_ws(server)
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 429
            break
        await client.ws.close()
    else:
        raise AssertionError("8 upgrades in a row were accepted")
    metrics = await server.metrics()
    assert metrics["tidings_connections_refused_total", (("reason", "rate"),)] >= 2


async def test_subscription_limit(serve: ServerFactory) -> None:
    server = await serve({"client.max_subscriptions": 2})
    client, _ = await connected(server, subscribe=("a", "b"))
    await client.send({"id": 9, "subscribe": {"channel": "c"}})
    assert await client.message() == {
        "id": 9,
        "error": {"code": 106, "message": "too many subscriptions (client.max_subscriptions)"},
    }
    # Server-side channels over the limit refuse the connection itself.
    greedy = await open_ws(server)
    await greedy.send({"id": 1, "connect": {"token": token("bob", channels=["a", "b", "c"])}})
    assert await greedy.close_code() == 3505


async def test_too_many_commands_in_one_frame(serve: ServerFactory) -> None:
    server = await serve({"client.max_commands_per_frame": 2})
    client = await open_ws(server)
    await client.send(
        {"id": 1, "connect": {"token": token()}},
        {"id": 2, "subscribe": {"channel": "a"}},
        {"id": 3, "subscribe": {"channel": "b"}},
    )
    assert await client.close_code() == 3501


async def test_slow_client_recovers_everything_after_the_3008_cut(serve: ServerFactory) -> None:
    server = await serve(
        {
            "client.max_queue_bytes": 1024,
            "channels.history_size": 1000,
            "amqp.max_message_bytes": 65536,
        }
    )
    node = server.node
    slow = await RawClient.connect(server.port)
    try:
        await slow.send(
            {"id": 1, "connect": {"token": token("slow")}},
            {"id": 2, "subscribe": {"channel": "feed"}},
        )
        await wait_until(lambda: node.hub.subscriptions == 1, what="the slow client to subscribe")
        (slow_conn,) = list(node.live)
        # What the client knows: the position of its subscribe reply (nothing after it).
        epoch, since = node.log.epoch, node.head
        sent = 0
        while not slow_conn.closing and sent < 1000:  # type: ignore[attr-defined]
            await node.publish(["feed"], {"i": sent, "pad": "x" * 32_000})
            sent += 1
            await asyncio.sleep(0)  # let the per-iteration flush write to the socket
        assert slow_conn.closing, "the slow client was never cut"  # type: ignore[attr-defined]
    finally:
        slow.close()
    # The client comes back, as the SDK does after 3008, and asks for what it missed.
    client, _ = await connected(server, "slow")
    await client.send(
        {
            "id": 2,
            "subscribe": {"channel": "feed", "recover": True, "offset": since, "epoch": epoch},
        }
    )
    result = (await client.reply(2))["subscribe"]
    assert result["recovered"] is True
    assert [p["data"]["i"] for p in result["publications"]] == list(range(sent))
