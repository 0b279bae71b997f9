"""The unmodified ``centrifuge-python`` SDK (Centrifugal's asyncio client, JSON protocol)
against a live node: connect, subscribe, receive, publish, presence, history and recovery
after a network cut.

The SDK runs on the test's own event loop beside the node; the cut goes through
:class:`Relay`, a TCP relay between them that can drop every connection and refuse new
ones, so the SDK sees its socket die as it would on a real network.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

pytest.importorskip("centrifuge", reason="needs centrifuge-python: run `make deps`")

from centrifuge import (
    Client,
    ClientEventHandler,
    ClientInfo,
    ClientState,
    ConnectedContext,
    DisconnectedContext,
    JoinContext,
    LeaveContext,
    PublicationContext,
    ReplyError,
    StreamPosition,
    SubscribedContext,
    Subscription,
    SubscriptionEventHandler,
)

from tests.integration.conftest import ServerFactory
from tests.integration.live import LiveServer, scaled, token, wait_until

pytestmark = pytest.mark.integration

TOML = """
[[namespaces]]
name = "room"
presence = true
join_leave = true
allow_publish_for_subscriber = true
allow_history_for_subscriber = true
allow_presence_for_subscriber = true

[[namespaces]]
name = "small"
history_size = 3
recovery_max_publications = 5  # past the window, the log gives at most 5
"""


class Relay:
    """A TCP relay to ``port`` on 127.0.0.1 that can cut the network and bring it back."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.online = True
        self.accepted = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listens on an ephemeral port and returns it."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def cut(self) -> None:
        """Drops every relayed connection (no close handshake) and refuses new ones."""
        self.online = False
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.online:
            writer.transport.abort()
            return
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        self._writers.discard(writer)
        writer.transport.abort()


class Recorder(ClientEventHandler, SubscriptionEventHandler):
    """Records what the SDK reports, for a client and its subscriptions alike."""

    def __init__(self) -> None:
        self.connected: list[ConnectedContext] = []
        self.disconnected: list[DisconnectedContext] = []
        self.subscribed: list[SubscribedContext] = []
        self.publications: list[PublicationContext] = []
        self.joins: list[ClientInfo] = []
        self.leaves: list[ClientInfo] = []

    async def on_connected(self, ctx: ConnectedContext) -> None:
        self.connected.append(ctx)

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.disconnected.append(ctx)

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.subscribed.append(ctx)

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.publications.append(ctx)

    async def on_join(self, ctx: JoinContext) -> None:
        self.joins.append(ctx.info)

    async def on_leave(self, ctx: LeaveContext) -> None:
        self.leaves.append(ctx.info)

    def data(self) -> list[Any]:
        return [ctx.pub.data for ctx in self.publications]


Connect = Callable[..., Awaitable[tuple[Client, Recorder]]]


@pytest.fixture
async def server(serve: ServerFactory) -> LiveServer:
    return await serve(toml=TOML)


@pytest.fixture
async def sdk(server: LiveServer) -> AsyncIterator[Connect]:
    """Connects SDK clients: ``client, events = await sdk("alice", url=...)``; each is
    disconnected after the test."""
    clients: list[Client] = []

    async def connect(user: str = "alice", *, url: str | None = None, **claims: Any) -> Any:
        events = Recorder()
        client = Client(
            url or f"ws://127.0.0.1:{server.port}/connection/websocket",
            events=events,
            token=token(user, **claims),
            timeout=scaled(5),
            max_reconnect_delay=0.5,
            proxy=None,
        )
        clients.append(client)
        await client.connect()
        await client.ready(timeout=scaled(5))
        return client, events

    yield connect
    for client in clients:
        await client.disconnect()


async def subscribed(
    client: Client, channel: str, **options: Any
) -> tuple[Subscription, Recorder]:
    """A subscription of ``client`` to ``channel`` (SDK ``options`` given), subscribed."""
    events = Recorder()
    sub = client.new_subscription(channel, events=events, **options)
    await sub.subscribe()
    await sub.ready(timeout=scaled(5))
    return sub, events


async def test_connect_subscribe_and_receive_server_publications(
    server: LiveServer, sdk: Connect
) -> None:
    client, events = await sdk("alice")
    assert events.connected[0].client and events.connected[0].version
    sub, sub_events = await subscribed(client, "room:1")
    first = sub_events.subscribed[0]
    assert (first.recoverable, first.recovered, first.was_recovering) == (True, False, False)
    assert first.stream_position is not None and first.stream_position.epoch

    for n in range(3):
        await server.publish("room:1", {"n": n})
    await wait_until(lambda: len(sub_events.publications) == 3, what="the publications")
    assert sub_events.data() == [{"n": 0}, {"n": 1}, {"n": 2}]
    offsets = [ctx.pub.offset for ctx in sub_events.publications]
    assert offsets == sorted(offsets) and len(set(offsets)) == 3
    assert all(ctx.pub.info is None for ctx in sub_events.publications)  # not a client's

    await sub.unsubscribe()
    await server.publish("room:1", {"n": 3})
    await server.publish("room:2", {"n": 4})  # a channel it never had
    _, sub2_events = await subscribed(client, "room:2")
    await server.publish("room:2", {"n": 5})
    await wait_until(lambda: sub2_events.publications, what="the second channel")
    assert sub_events.data() == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert sub2_events.data() == [{"n": 5}]


@pytest.mark.parametrize(
    ("options", "code", "reason"),
    [
        ({"token": token("alice") + "x"}, 3500, "bad signature"),
        # The SDK's other protocol: refused plainly, not misread as broken JSON.
        (
            {"token": token("alice"), "use_protobuf": True},
            3501,
            "the Protobuf protocol is not supported: connect with JSON",
        ),
    ],
    ids=["bad-token", "protobuf"],
)
async def test_a_client_that_cannot_be_served_is_ended_for_good(
    server: LiveServer, options: dict[str, Any], code: int, reason: str
) -> None:
    events = Recorder()
    client = Client(
        f"ws://127.0.0.1:{server.port}/connection/websocket",
        events=events,
        max_reconnect_delay=0.5,
        proxy=None,
        **options,
    )
    await client.connect()
    await wait_until(lambda: events.disconnected, what="the disconnect")
    assert [(ctx.code, ctx.reason) for ctx in events.disconnected] == [(code, reason)]
    assert client.state is ClientState.DISCONNECTED  # terminal: the SDK does not retry
    assert events.connected == []


async def test_client_publish_carries_the_publishers_info(sdk: Connect) -> None:
    alice, _ = await sdk("alice", info={"name": "Alice"})
    bob, _ = await sdk("bob")
    alice_sub, alice_events = await subscribed(alice, "room:chat")
    _, bob_events = await subscribed(bob, "room:chat")

    await alice_sub.publish({"text": "hi"})
    await wait_until(lambda: bob_events.publications, what="bob's copy")
    await wait_until(lambda: alice_events.publications, what="alice's own copy")
    pub = bob_events.publications[0].pub
    assert pub.data == {"text": "hi"} and pub.offset > 0
    assert pub.info == ClientInfo(
        client=client_id(alice), user="alice", conn_info={"name": "Alice"},
        chan_info=None,
    )
    assert alice_events.publications[0].pub == pub

    # Publishing needs a subscription in this namespace, and "small" allows none.
    with pytest.raises(ReplyError) as refused:
        await bob.publish("room:other", {"text": "not subscribed"})
    assert refused.value.code == 103
    _, small = await subscribed(bob, "small:x")
    with pytest.raises(ReplyError) as refused:
        await bob.publish("small:x", {"text": "no"})
    assert refused.value.code == 103
    assert small.publications == []


def client_id(client: Client) -> str:
    """The client id the node gave ``client`` (in its connect reply)."""
    recorder = client.events
    assert isinstance(recorder, Recorder)
    return recorder.connected[-1].client


async def test_presence_and_presence_stats_with_two_clients(sdk: Connect) -> None:
    alice, _ = await sdk("alice", info={"name": "Alice"})
    bob, _ = await sdk("bob")
    alice_sub, alice_events = await subscribed(alice, "room:invoice-7", join_leave=True)
    bob_sub, _ = await subscribed(bob, "room:invoice-7")
    ids = {client_id(alice): "alice", client_id(bob): "bob"}
    await wait_until(lambda: len(alice_events.joins) == 2, what="the joins")
    assert {info.client: info.user for info in alice_events.joins} == ids

    presence = await alice_sub.presence()
    assert {cid: info.user for cid, info in presence.clients.items()} == ids
    assert presence.clients[client_id(alice)].conn_info == {"name": "Alice"}
    stats = await bob_sub.presence_stats()
    assert (stats.num_clients, stats.num_users) == (2, 2)

    await bob_sub.unsubscribe()
    await wait_until(lambda: alice_events.leaves, what="bob's leave")
    assert [(info.client, info.user) for info in alice_events.leaves] == [(client_id(bob), "bob")]
    presence = await alice.presence("room:invoice-7")
    assert list(presence.clients) == [client_id(alice)]
    stats = await alice.presence_stats("room:invoice-7")
    assert (stats.num_clients, stats.num_users) == (1, 1)

    # Presence is for subscribers: bob left, so he is refused; "small" keeps none.
    with pytest.raises(ReplyError) as refused:
        await bob.presence("room:invoice-7")
    assert refused.value.code == 103
    await subscribed(bob, "small:x")
    with pytest.raises(ReplyError) as refused:
        await bob.presence_stats("small:x")
    assert refused.value.code == 108


async def test_history_with_limit_since_and_reverse(server: LiveServer, sdk: Connect) -> None:
    client, _ = await sdk("alice")
    sub, events = await subscribed(client, "room:h")
    for n in range(5):
        await server.publish("room:h", n)
    await wait_until(lambda: len(events.publications) == 5, what="the publications")

    everything = await sub.history(limit=10)
    assert [p.data for p in everything.publications] == [0, 1, 2, 3, 4]
    assert everything.offset == events.publications[-1].pub.offset
    assert everything.epoch == events.subscribed[0].stream_position.epoch
    oldest = await sub.history(limit=2)
    assert [p.data for p in oldest.publications] == [0, 1]
    newest = await sub.history(limit=2, reverse=True)
    assert [p.data for p in newest.publications] == [4, 3]
    second = everything.publications[1].offset
    since = await sub.history(limit=10, since=StreamPosition(second, everything.epoch))
    assert [p.data for p in since.publications] == [2, 3, 4]
    position_only = await sub.history(limit=0)
    assert position_only.publications == [] and position_only.offset == everything.offset

    _, small = await subscribed(client, "small:h")
    with pytest.raises(ReplyError) as refused:  # no allow_history_for_* in "small"
        await client.history("small:h", limit=10)
    assert refused.value.code == 103
    assert small.publications == []


@pytest.mark.parametrize(
    ("channel", "missed", "recovered"), [("room:r", 20, True), ("small:r", 10, False)]
)
async def test_recovery_after_a_network_cut(
    server: LiveServer, sdk: Connect, channel: str, missed: int, recovered: bool
) -> None:
    relay = Relay(server.port)
    port = await relay.start()
    try:
        client, client_events = await sdk(url=f"ws://127.0.0.1:{port}/connection/websocket")
        _, events = await subscribed(client, channel)
        await server.publish(channel, 0)
        await wait_until(lambda: events.publications, what="the live publication")

        relay.cut()
        await wait_until(lambda: client.state is ClientState.CONNECTING, what="the SDK to notice")
        for n in range(1, missed + 1):
            await server.publish(channel, n)
        relay.online = True
        await wait_until(lambda: len(events.subscribed) == 2, what="the resubscription")
        await server.publish(channel, missed + 1)
        await wait_until(lambda: events.data()[-1:] == [missed + 1], what="the live one")
    finally:
        await relay.close()

    again = events.subscribed[1]
    assert (again.was_recovering, again.recovered) == (True, recovered)
    assert relay.accepted >= 2 and client_events.disconnected == []  # reconnected, not ended
    if recovered:
        assert events.data() == list(range(missed + 2))  # each once, in order
    else:
        assert events.data() == [0, missed + 1]  # nothing replayed from a partial window
    offsets = [ctx.pub.offset for ctx in events.publications]
    assert offsets == sorted(set(offsets))
