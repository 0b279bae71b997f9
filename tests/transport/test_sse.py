"""The SSE transport (``/events``, ``/connection/uni_sse``) over real sockets, event by event."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest

from tests.integration.conftest import ServerFactory
from tests.integration.live import LiveServer, scaled, token, wait_until
from tidings.publication import Publication
from tidings.transport.sse import SseConnection

pytestmark = pytest.mark.integration


@dataclasses.dataclass(frozen=True)
class Event:
    """One SSE block: its fields as the browser would see them."""

    id: str | None = None
    event: str = "message"
    data: str = ""
    comments: tuple[str, ...] = ()

    def json(self) -> Any:
        return orjson.loads(self.data)


class SseClient:
    """Reads a ``text/event-stream`` response block by block (RFC 8895 / HTML §9.2 parsing,
    reduced to the fields tidings sends)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def block(self, timeout: float = 2.0) -> Event:
        fields: dict[str, str] = {}
        data: list[str] = []
        comments: list[str] = []
        while True:
            raw = await asyncio.wait_for(self.response.content.readline(), scaled(timeout))
            if not raw:
                raise EOFError("the stream ended")
            line = raw.decode().rstrip("\n")
            if line == "":
                if fields or data or comments:
                    return Event(
                        fields.get("id"),
                        fields.get("event", "message"),
                        "\n".join(data),
                        tuple(comments),
                    )
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                comments.append(value)
            elif name == "data":
                data.append(value)
            else:
                fields[name] = value

    async def event(self, timeout: float = 2.0) -> Event:
        """The next block that carries data (keep-alive comments are skipped)."""
        while True:
            block = await self.block(timeout)
            if block.data:
                return block

    async def silent(self, seconds: float = 0.3) -> None:
        try:
            block = await self.block(seconds)
        except TimeoutError:
            return
        raise AssertionError(f"expected silence, got {block}")

    async def ended(self, timeout: float = 2.0) -> None:
        """Asserts the stream ends (after any remaining blocks, which are returned)."""
        with pytest.raises(EOFError):
            for _ in range(100):
                await self.block(timeout)


async def open_events(
    server: LiveServer,
    path: str = "/events",
    *,
    expect: int = 200,
    method: str = "GET",
    **kwargs: Any,
) -> SseClient:
    response = await server.http.request(method, f"{server.url}{path}", **kwargs)
    assert response.status == expect, await response.text()
    return SseClient(response)


async def connected(
    server: LiveServer,
    user: str = "alice",
    *,
    channels: tuple[str, ...] = ("user#alice",),
    ttl: float = 3600,
    **kwargs: Any,
) -> tuple[SseClient, Event]:
    """An ``/events`` stream with a query token; returns it and its connect event."""
    value = token(user, channels=list(channels), ttl=ttl)
    params = {"token": value, **kwargs.pop("params", {})}
    client = await open_events(server, params=params, **kwargs)
    first = await client.event()
    assert "connect" in first.json(), first
    return client, first


def eid(server: LiveServer, offset: int) -> str:
    return f"{server.node.log.epoch}:{offset}"


def pub_data(event: Event) -> Any:
    return event.json()["pub"]["data"]


# ---------------------------------------------------------------------- connecting
async def test_stream_headers_connect_event_and_a_publication(server: LiveServer) -> None:
    client, first = await connected(server)
    headers = client.response.headers
    assert headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"
    assert headers["X-Accel-Buffering"] == "no"
    assert headers["Transfer-Encoding"] == "chunked"
    # The connect event carries the position the stream is complete from.
    assert first.id == eid(server, 0)
    result = first.json()["connect"]
    assert result["subs"] == {
        "user#alice": {
            "recoverable": True,
            "positioned": True,
            "epoch": server.node.log.epoch,
            "offset": 0,
        }
    }
    assert "pong" not in result
    await server.publish("user#alice", {"text": "Invoice #12 paid"})
    event = await client.event()
    assert event.id == eid(server, 1)
    assert event.event == "message"
    assert event.json() == {
        "channel": "user#alice",
        "pub": {"data": {"text": "Invoice #12 paid"}, "offset": 1},
    }


@pytest.mark.parametrize("where", ["query", "cookie", "bearer"])
async def test_token_from_query_cookie_or_bearer_header(server: LiveServer, where: str) -> None:
    value = token("alice", channels=["user#alice"])
    kwargs: dict[str, Any] = {
        "query": {"params": {"token": value}},
        "cookie": {"headers": {"Cookie": f"tidings_token={value}"}},
        "bearer": {"headers": {"Authorization": f"Bearer {value}"}},
    }[where]
    client = await open_events(server, **kwargs)
    assert "connect" in (await client.event()).json()
    await server.publish("user#alice", {"n": 1})
    assert pub_data(await client.event()) == {"n": 1}


async def test_only_the_tokens_channels_are_streamed(server: LiveServer) -> None:
    alice, _ = await connected(server, "alice")
    bob, _ = await connected(server, "bob", channels=("user#bob",))
    await server.publish("user#bob", {"for": "bob"})
    await server.publish("user#alice", {"for": "alice"})
    assert pub_data(await alice.event()) == {"for": "alice"}
    assert pub_data(await bob.event()) == {"for": "bob"}
    await alice.silent()


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_uni_sse_connect_request_in_cf_connect_or_body(
    server: LiveServer, method: str
) -> None:
    request = {"token": token("alice", channels=["user#alice"]), "name": "js"}
    if method == "GET":
        kwargs: dict[str, Any] = {"params": {"cf_connect": orjson.dumps(request).decode()}}
    else:
        kwargs = {"data": orjson.dumps(request), "headers": {"Content-Type": "application/json"}}
    client = await open_events(server, "/connection/uni_sse", method=method, **kwargs)
    first = await client.event()
    assert first.id == eid(server, 0)
    assert set(first.json()["connect"]["subs"]) == {"user#alice"}
    await server.publish("user#alice", {"n": 1})
    event = await client.event()
    assert (event.id, event.json()["pub"]) == (eid(server, 1), {"data": {"n": 1}, "offset": 1})


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "code"),
    [
        ("/events", {}, 401, 3500),
        ("/events", {"params": {"token": "not-a-jwt"}}, 401, 3500),
        # Expired is final too: an EventSource would retry the same URL forever.
        ("/events", {"params": {"token": token("alice", ttl=-100)}}, 401, 3500),
        ("/connection/uni_sse", {}, 400, None),
        ("/connection/uni_sse", {"params": {"cf_connect": "{not json"}}, 400, None),
        ("/connection/uni_sse", {"params": {"cf_connect": '{"subs": 3}'}}, 400, None),
    ],
)
async def test_refusals_are_http_statuses_that_stop_an_event_source(
    server: LiveServer, path: str, kwargs: dict[str, Any], status: int, code: int | None
) -> None:
    async with server.http.get(f"{server.url}{path}", **kwargs) as r:
        assert r.status == status
        body = await r.json()
    assert "error" in body
    assert body.get("code") == code
    assert server.node.connections == 0
    assert server.node.hub.subscriptions == 0


# ---------------------------------------------------------------------- recovery
@pytest.mark.parametrize("how", ["header", "query"])
async def test_reconnect_replays_exactly_the_missed_events_then_goes_live(
    server: LiveServer, how: str
) -> None:
    client, _ = await connected(server)
    for n in range(2):
        await server.publish("user#alice", {"n": n})
    seen = [await client.event() for _ in range(2)]
    last_id = seen[-1].id
    assert last_id == eid(server, 2)
    client.response.close()
    await wait_until(lambda: server.node.connections == 0, what="the first stream to go")

    for n in range(2, 5):
        await server.publish("user#alice", {"n": n})
    await server.publish("user#bob", {"not": "alice's"})
    if how == "header":
        again, first = await connected(server, headers={"Last-Event-ID": last_id})
    else:
        again, first = await connected(server, params={"last_event_id": last_id})
    assert first.id == last_id  # resumed from there: a drop now loses nothing either
    sub = first.json()["connect"]["subs"]["user#alice"]
    assert sub["was_recovering"] is True
    assert sub["recovered"] is True
    assert "publications" not in sub  # they follow as events of their own
    replayed = [await again.event() for _ in range(3)]
    assert [e.id for e in replayed] == [eid(server, p) for p in (3, 4, 5)]
    assert [pub_data(e) for e in replayed] == [{"n": 2}, {"n": 3}, {"n": 4}]
    await server.publish("user#alice", {"n": 5})
    live = await again.event()
    assert (live.id, pub_data(live)) == (eid(server, 7), {"n": 5})
    await again.silent()


async def test_the_browsers_header_wins_over_a_stale_url(server: LiveServer) -> None:
    for n in range(3):
        await server.publish("user#alice", {"n": n})
    # EventSource repeats its URL on every reconnect; the header is the newer position.
    again, first = await connected(
        server, params={"last_event_id": eid(server, 1)}, headers={"Last-Event-ID": eid(server, 2)}
    )
    assert first.id == eid(server, 2)
    assert pub_data(await again.event()) == {"n": 2}
    await again.silent()


async def test_a_drop_before_the_first_event_still_resumes(server: LiveServer) -> None:
    client, first = await connected(server)
    client.response.close()
    await server.publish("user#alice", {"n": 0})
    again, _ = await connected(server, headers={"Last-Event-ID": first.id})
    assert pub_data(await again.event()) == {"n": 0}


async def test_replay_merges_channels_in_log_order(server: LiveServer) -> None:
    channels = ("user#alice", "news")
    client, first = await connected(server, channels=channels)
    assert set(first.json()["connect"]["subs"]) == set(channels)
    await server.publish("news", {"n": 0})
    assert pub_data(await client.event()) == {"n": 0}
    client.response.close()
    for n, channel in enumerate(["user#alice", "news", "user#alice"], start=1):
        await server.publish(channel, {"n": n})
    again, _ = await connected(server, channels=channels, headers={"Last-Event-ID": eid(server, 1)})
    replayed = [await again.event() for _ in range(3)]
    assert [(e.json()["channel"], pub_data(e)["n"]) for e in replayed] == [
        ("user#alice", 1),
        ("news", 2),
        ("user#alice", 3),
    ]
    await again.silent()


async def test_one_event_on_two_channels_carries_its_id_only_once(server: LiveServer) -> None:
    channels = ("user#alice", "news")
    client, _ = await connected(server, channels=channels)
    await server.api("broadcast", {"channels": list(channels), "data": {"n": 1}})
    live = [await client.event(), await client.event()]
    # Only the last event of a position has the id: a drop between them resumes at the
    # position, so the second is replayed rather than skipped.
    assert [e.id for e in live] == [None, eid(server, 1)]
    client.response.close()
    await server.api("broadcast", {"channels": list(channels), "data": {"n": 2}})
    again, _ = await connected(server, channels=channels, headers={"Last-Event-ID": "0"})
    replayed = [await again.event() for _ in range(4)]
    assert [e.id for e in replayed] == [None, eid(server, 1), None, eid(server, 2)]
    assert sorted(e.json()["channel"] for e in replayed) == sorted(channels * 2)


async def test_uni_sse_recovers_from_cf_connect_positions(server: LiveServer) -> None:
    for n in range(3):
        await server.publish("user#alice", {"n": n})
    request = {
        "token": token("alice", channels=["user#alice"]),
        "subs": {"user#alice": {"recover": True, "offset": 1, "epoch": server.node.log.epoch}},
    }
    client = await open_events(
        server, "/connection/uni_sse", params={"cf_connect": orjson.dumps(request).decode()}
    )
    first = await client.event()
    assert first.json()["connect"]["subs"]["user#alice"]["recovered"] is True
    assert [pub_data(await client.event()) for _ in range(2)] == [{"n": 1}, {"n": 2}]
    await client.silent()


@pytest.mark.parametrize("last_id", ["0123456789ab:{top}", "0123456789ab:1", "garbage"])
async def test_a_position_of_another_epoch_gets_a_gap_event(
    server: LiveServer, last_id: str
) -> None:
    for n in range(3):
        await server.publish("user#alice", {"n": n})
    # After a restart of the memory log the old run's positions fall inside the new range;
    # the epoch in the id tells them apart.
    last_id = last_id.format(top=server.node.head)
    client, first = await connected(server, headers={"Last-Event-ID": last_id})
    head = server.node.head
    assert first.id == eid(server, head)
    sub = first.json()["connect"]["subs"]["user#alice"]
    assert sub["was_recovering"] is True
    assert "recovered" not in sub
    gap = await client.event()
    assert gap.event == "gap"
    assert gap.id == eid(server, head)
    assert gap.json() == {
        "channel": "user#alice",
        "recovered": False,
        "epoch": server.node.log.epoch,
        "offset": head,
    }
    await server.publish("user#alice", {"n": "live"})
    assert pub_data(await client.event()) == {"n": "live"}  # nothing replayed before it


async def test_a_position_older_than_the_history_is_recovered_from_the_log(
    serve: ServerFactory,
) -> None:
    server = await serve({"channels.history_size": 2})
    for n in range(5):
        await server.publish("user#alice", {"n": n})
        await server.publish("user#bob", {"n": n})
    client, first = await connected(server, headers={"Last-Event-ID": eid(server, 1)})
    assert first.json()["connect"]["subs"]["user#alice"]["recovered"] is True
    replay = [await client.event() for _ in range(4)]
    assert [pub_data(e) for e in replay] == [{"n": n} for n in range(1, 5)]
    assert [e.id for e in replay] == [eid(server, p) for p in (3, 5, 7, 9)]
    await server.publish("user#alice", {"n": "live"})
    assert pub_data(await client.event()) == {"n": "live"}  # nothing twice, nothing skipped
    metrics = await server.metrics()
    assert metrics["tidings_recoveries_total", (("outcome", "stream"),)] == 1


async def test_a_position_older_than_the_history_gets_a_gap_event_past_the_bound(
    serve: ServerFactory,
) -> None:
    server = await serve(
        {"channels.history_size": 2, "channels.recovery_max_publications": 3}
    )
    for n in range(5):
        await server.publish("user#alice", {"n": n})
    client, _ = await connected(server, headers={"Last-Event-ID": eid(server, 1)})
    gap = await client.event()
    assert (gap.event, gap.json()["offset"]) == ("gap", 5)
    await server.publish("user#alice", {"n": "live"})
    assert pub_data(await client.event()) == {"n": "live"}  # nothing replayed before it
    metrics = await server.metrics()
    assert metrics["tidings_recoveries_total", (("outcome", "stream_failed"),)] == 1
    assert metrics["tidings_recoveries_total", (("outcome", "failed"),)] == 1


# ---------------------------------------------------------------------- liveness and limits
@pytest.mark.parametrize(("path", "ping"), [("/events", ": ping"), ("/connection/uni_sse", "{}")])
async def test_keep_alive_at_the_ping_interval(serve: ServerFactory, path: str, ping: str) -> None:
    server = await serve({"client.ping_interval": 1})
    value = token("alice", channels=["user#alice"])
    params = {"token": value} if path == "/events" else {"cf_connect": f'{{"token":"{value}"}}'}
    client = await open_events(server, path, params=params)
    assert "connect" in (await client.event()).json()
    block = await client.block(timeout=3)
    if path == "/events":
        assert (block.comments, block.data, block.id) == (("ping",), "", None)
    else:
        assert (block.data, block.id) == (ping, None)


async def test_the_client_leaving_frees_its_session(server: LiveServer) -> None:
    client, _ = await connected(server)
    assert (server.node.connections, server.node.hub.subscriptions) == (1, 1)
    client.response.close()
    await wait_until(
        lambda: server.node.connections == 0 and server.node.hub.subscriptions == 0,
        what="the session to be released",
    )
    assert not server.node.live
    metrics = await server.metrics()
    assert metrics["tidings_connections", (("transport", "sse"),)] == 0


async def test_shutdown_tells_the_client_to_reconnect_and_ends_the_stream(
    server: LiveServer,
) -> None:
    client, _ = await connected(server)
    stop = asyncio.create_task(server.stop())
    event = await client.event()
    assert event.json() == {"disconnect": {"code": 3001, "reason": "shutdown", "reconnect": True}}
    await client.ended()
    await stop


async def test_an_expired_token_ends_the_stream_with_3005(serve: ServerFactory) -> None:
    server = await serve({"client.expired_close_delay": 0})
    client, first = await connected(server, ttl=1)
    assert first.json()["connect"]["expires"] is True
    event = await client.event(timeout=4)
    assert event.json()["disconnect"]["code"] == 3005
    await client.ended()


async def test_http_1_0_gets_a_close_delimited_stream(server: LiveServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    value = token("alice", channels=["user#alice"])
    writer.write(f"GET /events?token={value} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(2))
    assert head.startswith(b"HTTP/1.0 200")
    assert b"Transfer-Encoding" not in head
    first = await asyncio.wait_for(reader.readuntil(b"\n\n"), scaled(2))
    assert first.startswith(b"id: ") and b'data: {"connect":' in first
    await server.publish("user#alice", {"n": 1})
    event = await asyncio.wait_for(reader.readuntil(b"\n\n"), scaled(2))
    assert event == Publication("user#alice", 1, b'{"n":1}', 0).sse(server.node.log.epoch)
    writer.close()


async def test_a_slow_client_is_cut_with_3008_while_others_keep_receiving(
    serve: ServerFactory,
) -> None:
    server = await serve({"client.max_queue_bytes": 1024})
    node = server.node
    normal, _ = await connected(server, "normal", channels=("feed",))
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", server.port))
        value = token("slow", channels=["feed"])
        request = f"GET /events?token={value} HTTP/1.1\r\nHost: x\r\n\r\n"
        await loop.sock_sendall(sock, request.encode())
        await wait_until(lambda: node.connections == 2, what="the slow client to connect")
        slow = next(
            c
            for c in node.live
            if isinstance(c, SseConnection) and c.session and c.session.user == "slow"
        )
        transport = slow.transport
        payload = "x" * 32_000
        sent = 0
        # Kernel buffers absorb a few megabytes first; the cap keeps a broken limit finite.
        while not slow.closing and sent < 1000:
            await node.publish(["feed"], {"i": sent, "pad": payload})
            sent += 1
            assert pub_data(await normal.event())["i"] == sent - 1
        assert slow.closing, f"not cut after {sent} publications of 32 kB"
        await wait_until(lambda: slow not in node.live, what="the slow client to be released")
        assert transport.is_closing() and transport.get_write_buffer_size() == 0
        assert (node.connections, node.hub.subscriptions) == (1, 1)
        metrics = await server.metrics()
        assert metrics["tidings_disconnects_total", (("code", "3008"),)] == 1
        assert metrics["tidings_slow_disconnects_total", ()] == 1
        await node.publish(["feed"], {"after": True})
        assert pub_data(await normal.event()) == {"after": True}
    finally:
        sock.close()


# ---------------------------------------------------------------------- cross-site
@pytest.mark.parametrize("path", ["/events", "/connection/uni_sse"])
async def test_cross_origin_is_refused_with_403(server: LiveServer, path: str) -> None:
    params = {"token": token("alice", channels=["user#alice"])}
    async with server.http.get(
        f"{server.url}{path}", params=params, headers={"Origin": "http://evil.example"}
    ) as r:
        assert r.status == 403
        assert "Access-Control-Allow-Origin" not in r.headers
    async with server.http.options(
        f"{server.url}{path}", headers={"Origin": "http://evil.example"}
    ) as r:
        assert r.status == 403
        assert "Access-Control-Allow-Origin" not in r.headers
    assert server.node.connections == 0


async def test_an_allowed_origin_gets_cors_headers_and_preflights(serve: ServerFactory) -> None:
    server = await serve({"server.allowed_origins": ["https://app.example"]})
    origin = {"Origin": "https://app.example"}
    async with server.http.options(
        f"{server.url}/connection/uni_sse",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    ) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert r.headers["Access-Control-Allow-Credentials"] == "true"
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        assert "Last-Event-ID" in r.headers["Access-Control-Allow-Headers"]
    value = quote(token("alice", channels=["user#alice"]))
    client = await open_events(server, f"/events?token={value}", headers=origin)
    assert client.response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert client.response.headers["Vary"] == "Origin"
    assert "connect" in (await client.event()).json()
