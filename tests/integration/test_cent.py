"""The unmodified ``cent`` package (Centrifugo's Python API client) against a live node."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from cent import (
    AsyncClient,
    BatchRequest,
    BroadcastRequest,
    ChannelsRequest,
    DisconnectRequest,
    HistoryRemoveRequest,
    HistoryRequest,
    InfoRequest,
    PresenceRequest,
    PublishRequest,
    StreamPosition,
    SubscribeRequest,
)
from cent.exceptions import CentApiResponseError, CentUnauthorizedError

from tests.integration.conftest import ServerFactory
from tests.integration.live import API_KEY, LiveServer, connected
from tidings import __version__

pytestmark = pytest.mark.integration

TOML = """
[[namespaces]]
name = "feed"

[[namespaces]]
name = "live"
history_size = 0
"""


@pytest.fixture
async def server(serve: ServerFactory) -> LiveServer:
    return await serve(toml=TOML)


@pytest.fixture
async def cent(server: LiveServer) -> AsyncIterator[AsyncClient]:
    client = AsyncClient(f"{server.url}/api", API_KEY, timeout=5)
    yield client
    await client.close()


async def test_publish_broadcast_history(server: LiveServer, cent: AsyncClient) -> None:
    alice, _ = await connected(server, subscribe=("feed:a", "feed:b"))
    published = await cent.publish(PublishRequest(channel="feed:a", data={"n": 1}))
    assert (published.offset, published.epoch) == (0, "")  # not known before the log has it
    assert (await alice.message())["push"]["pub"] == {"data": {"n": 1}, "offset": 1}

    result = await cent.broadcast(
        BroadcastRequest(channels=["feed:a", "feed:b", "nope:c"], data="all")
    )
    assert result.responses[0].error is None and result.responses[1].error is None
    assert result.responses[2].error is not None and result.responses[2].error.code == 102
    assert len(await alice.frame()) == 2

    history = await cent.history(HistoryRequest(channel="feed:a", limit=10))
    assert [(p.offset, p.data) for p in history.publications] == [(1, {"n": 1}), (2, "all")]
    assert (history.offset, history.epoch) == (2, server.node.log.epoch)
    since = StreamPosition(offset=1, epoch=history.epoch)
    later = await cent.history(HistoryRequest(channel="feed:a", limit=10, since=since))
    assert [p.data for p in later.publications] == ["all"]
    newest = await cent.history(HistoryRequest(channel="feed:a", limit=1, reverse=True))
    assert [p.data for p in newest.publications] == ["all"]

    await cent.history_remove(HistoryRemoveRequest(channel="feed:a"))
    assert (await cent.history(HistoryRequest(channel="feed:a", limit=10))).publications == []


async def test_channels_and_info(server: LiveServer, cent: AsyncClient) -> None:
    _alice = await connected(server, subscribe=("feed:a",))
    _bob = await connected(server, "bob", subscribe=("feed:a", "feed:b"))
    channels = await cent.channels(ChannelsRequest())
    assert {name: c.num_clients for name, c in channels.channels.items()} == {
        "feed:a": 2,
        "feed:b": 1,
    }
    assert set((await cent.channels(ChannelsRequest(pattern="*:b"))).channels) == {"feed:b"}
    (node,) = (await cent.info(InfoRequest())).nodes
    assert (node.name, node.version, node.num_clients, node.num_users) == (
        "test-node",
        __version__,
        2,
        2,
    )
    assert (node.num_subs, node.num_channels) == (3, 2)


async def test_subscribe_and_disconnect(server: LiveServer, cent: AsyncClient) -> None:
    alice, _ = await connected(server)
    await cent.subscribe(SubscribeRequest(user="alice", channel="feed:a"))
    assert "subscribe" in (await alice.message())["push"]
    await cent.disconnect(DisconnectRequest(user="alice"))
    assert await alice.close_code() == 3503


async def test_batch(server: LiveServer, cent: AsyncClient) -> None:
    alice, _ = await connected(server, subscribe=("feed:a",))
    result = await cent.batch(
        BatchRequest(
            requests=[
                PublishRequest(channel="feed:a", data=1),
                PublishRequest(channel="feed:a", data=2),
                HistoryRequest(channel="feed:a", limit=5),
            ]
        )
    )
    assert len(result.replies) == 3
    assert [p.data for p in result.replies[2].publications] == [1, 2]  # type: ignore[attr-defined]
    pushes = await alice.frame()
    if len(pushes) < 2:  # one frame or two, as the node's flush falls
        pushes += await alice.frame()
    assert [p["push"]["pub"]["data"] for p in pushes] == [1, 2]


async def test_errors(server: LiveServer, cent: AsyncClient) -> None:
    with pytest.raises(CentApiResponseError) as info:
        await cent.history(HistoryRequest(channel="live:a", limit=1))
    assert info.value.code == 108
    with pytest.raises(CentApiResponseError) as info:
        await cent.publish(PublishRequest(channel="nope:a", data=1))
    assert info.value.code == 102
    with pytest.raises(CentApiResponseError) as info:
        await cent.presence(PresenceRequest(channel="feed:a"))
    assert info.value.code == 108
    wrong = AsyncClient(f"{server.url}/api", "wrong-key-0123456789", timeout=5)
    try:
        with pytest.raises(CentUnauthorizedError):
            await wrong.publish(PublishRequest(channel="feed:a", data=1))
    finally:
        await wrong.close()
